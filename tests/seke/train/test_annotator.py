"""A saved checkpoint scored by the platform's FEAB evaluator through the annotator factory."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from seke.evaluate import evaluate, load_annotator  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.taxonomy import EXPRESSIONS  # noqa: E402
from seke.train.arrays import from_feid  # noqa: E402
from seke.train.checkpoint import save_checkpoint  # noqa: E402
from seke.train.config import TrainConfig  # noqa: E402
from seke.train.evaluate import predict  # noqa: E402
from seke.train.trainer import train  # noqa: E402
from tests.seke.train.synthetic import feab_rows, feid_rows  # noqa: E402


def test_checkpoint_scored_by_the_feab_evaluator(tmp_path):
    arrays, _ = from_feid(feid_rows(32, seed=4), image_size=24)
    cfg = TrainConfig.tiny(max_steps=6, batch_size=8)
    result = train(arrays, cfg, device="cpu", log=lambda _: None)
    path = save_checkpoint(result.model, cfg, {"config_digest": cfg.digest()},
                           str(tmp_path / "models/m/data=v/config=c"))

    engine = load_annotator("seke.train.annotator:checkpoint_annotator", knowledge_v1(), checkpoint=path)
    feab = pl.from_arrow(feab_rows(12))
    scored = evaluate(engine, feab, plots=False)
    assert scored.model == f"checkpoint/{cfg.name}@{cfg.digest()}" and scored.backend == "checkpoint"
    expr = scored.items.filter(pl.col("task") == "expression")
    assert expr.height > 0 and expr["error"].is_null().all()

    # The evaluator's predictions are the model's own argmax on the same pixels.
    from seke.train.arrays import decode_grey

    pngs = dict(zip(feab["face_id"].to_list(), feab["image_png"].to_list()))
    ids = expr["face_id"].to_list()
    images = np.stack([decode_grey(pngs[f], cfg.image_size) for f in ids])
    want = [EXPRESSIONS[i] for i in predict(result.model, images, "cpu", cfg)["expression_probs"].argmax(1)]
    assert expr["pred_expression"].to_list() == want


def test_checkpoint_annotator_needs_a_checkpoint():
    with pytest.raises(ValueError, match="checkpoint="):
        load_annotator("seke.train.annotator:checkpoint_annotator", knowledge_v1())


def test_checkpoint_as_the_offline_annotators_second_expression_model(tmp_path):
    """The expression model the offline annotator pools in (SEKE_EXPRESSION_CHECKPOINT) scores
    a view exactly as the checkpoint's own evaluation does, and names itself for certificates."""
    from PIL import Image

    from seke.train.expression_model import CheckpointExpressionModel
    from seke.train.arrays import decode_grey

    arrays, _ = from_feid(feid_rows(32, seed=5), image_size=24)
    cfg = TrainConfig.tiny(max_steps=4, batch_size=8)
    result = train(arrays, cfg, device="cpu", log=lambda _: None)
    path = save_checkpoint(result.model, cfg, {"config_digest": cfg.digest(), "data_version": "v9"},
                           str(tmp_path / "models/m/data=v9/config=c"))
    second = CheckpointExpressionModel(path)
    assert second.version == f"checkpoint {cfg.name}@{cfg.digest()} data v9"

    png = feab_rows(1)["image_png"][0].as_py()
    import io

    p = second.probs(Image.open(io.BytesIO(png)).convert("RGB"))
    want = predict(result.model, decode_grey(png, cfg.image_size)[None], "cpu", cfg)["expression_probs"][0]
    assert p.shape == (len(EXPRESSIONS),) and abs(p.sum() - 1) < 1e-5
    np.testing.assert_allclose(p, want, atol=2e-3)   # RGB→grey of a grey image: same pixels
    with pytest.raises(FileNotFoundError):
        CheckpointExpressionModel(str(tmp_path / "nowhere"))


def test_checkpoint_ensemble_averages_its_members(tmp_path):
    """SEKE_EXPRESSION_CHECKPOINT=A,B: the second model is the mean of the members' probabilities,
    named by every member; checkpoint_eval scores the same spec as one column."""
    import io

    from PIL import Image

    from seke.train.expression_model import CheckpointEnsemble, CheckpointExpressionModel, load_expression_model

    arrays, _ = from_feid(feid_rows(32, seed=5), image_size=24)
    paths = []
    for seed in (1, 2):
        cfg = TrainConfig.tiny(max_steps=4, batch_size=8, seed=seed)
        result = train(arrays, cfg, device="cpu", log=lambda _: None)
        paths.append(save_checkpoint(result.model, cfg, {"config_digest": cfg.digest(), "data_version": f"v{seed}"},
                                     str(tmp_path / f"models/m{seed}/data=v{seed}/config=c")))
    one = load_expression_model(paths[0])
    assert isinstance(one, CheckpointExpressionModel)
    ens = load_expression_model(f" {paths[0]} ,{paths[1]},")
    assert isinstance(ens, CheckpointEnsemble) and len(ens.members) == 2
    assert "data v1" in ens.version and "data v2" in ens.version and ens.version.startswith("ensemble of 2")
    image = Image.open(io.BytesIO(feab_rows(1)["image_png"][0].as_py())).convert("RGB")
    a, b = (CheckpointExpressionModel(p).probs(image) for p in paths)
    assert not np.allclose(a, b, atol=1e-4)   # the members differ, so the mean is not either one
    np.testing.assert_allclose(ens.probs(image), (a + b) / 2, atol=1e-6)


@pytest.mark.parametrize("spec, match", [("", "needs a checkpoint"), (" , ", "needs a checkpoint"),
                                         ("a,b,a", "names a more than once")])
def test_checkpoint_spec_refused(spec, match):
    from seke.train.expression_model import checkpoint_paths

    with pytest.raises(ValueError, match=match):
        checkpoint_paths(spec)
