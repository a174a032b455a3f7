"""The annotator resource builds the offline annotator with a trained checkpoint as its second
expression model when SEKE_EXPRESSION_CHECKPOINT names one, and refuses a missing checkpoint
when the annotator is built (before any face is sampled)."""

from __future__ import annotations

import pytest

from resources.settings import default_resources
from seke.knowledge import knowledge_v1

torch = pytest.importorskip("torch")


def _annotator_from_env():
    from dagster import build_resources

    with build_resources({"annotator": default_resources()["annotator"]}) as res:
        return res.annotator


def test_expression_checkpoint_from_env_becomes_the_second_model(monkeypatch, tmp_path):
    from seke.train.checkpoint import save_checkpoint
    from seke.train.config import TrainConfig
    from seke.train.model import build_model

    cfg = TrainConfig.tiny()
    path = save_checkpoint(build_model(cfg), cfg, {"config_digest": cfg.digest()}, str(tmp_path / "ckpt"))
    monkeypatch.setenv("SEKE_EXPRESSION_CHECKPOINT", path)
    resource = _annotator_from_env()
    assert resource.kind == "offline" and resource.expression_checkpoint == path
    ann = resource.build(knowledge_v1(), None)
    assert ann.source == "offline+checkpoint" and f"second model checkpoint tiny@{cfg.digest()}" in ann.model

    monkeypatch.setenv("SEKE_EXPRESSION_CHECKPOINT_WEIGHTS", "ckplus=0,*=0.3")
    ann = _annotator_from_env().build(knowledge_v1(), None)
    assert ann.second_weight_for("ckplus") == 0.0 and ann.second_weight_for("wild") == 0.3
    assert "weights ckplus=0,*=0.3" in ann.model
    monkeypatch.setenv("SEKE_EXPRESSION_CHECKPOINT_WEIGHTS", "ckplus=2")
    with pytest.raises(ValueError, match="must be in"):
        _annotator_from_env().build(knowledge_v1(), None)

    monkeypatch.delenv("SEKE_EXPRESSION_CHECKPOINT_WEIGHTS")
    monkeypatch.setenv("SEKE_EXPRESSION_CHECKPOINT", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        _annotator_from_env().build(knowledge_v1(), None)


def test_no_checkpoint_means_the_plain_offline_annotator(monkeypatch):
    monkeypatch.delenv("SEKE_EXPRESSION_CHECKPOINT", raising=False)
    ann = _annotator_from_env().build(knowledge_v1(), None)
    assert ann.source == "offline" and "second model" not in ann.model
