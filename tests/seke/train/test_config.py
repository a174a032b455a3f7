"""Recipe overrides from the command line (``--set field=value``) keep each field's type."""

from __future__ import annotations

import pytest

from seke.train.config import TrainConfig, with_overrides


def test_overrides_parse_by_the_field_type() -> None:
    cfg = with_overrides(TrainConfig.compact(), ["aug_erase_p=0", "blocks=0,1,1,1", "aug_flip=false",
                                                 "epochs=12", "optimizer=sgd", "aug_scale=0.9,1.1"])
    assert cfg.aug_erase_p == 0.0 and isinstance(cfg.aug_erase_p, float)
    assert cfg.blocks == (0, 1, 1, 1) and cfg.aug_flip is False and cfg.epochs == 12
    assert cfg.optimizer == "sgd" and cfg.aug_scale == (0.9, 1.1)
    assert with_overrides(cfg, []) == cfg


@pytest.mark.parametrize("item, message", [("nope=1", "TrainConfig field"), ("epochs", "TrainConfig field"),
                                           ("epochs=1.5", "not a int"), ("aug_flip=maybe", "not a bool"),
                                           ("blocks=1,x", "not a tuple")])
def test_bad_overrides_are_refused_with_the_assignment_named(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        with_overrides(TrainConfig.compact(), [item])
    assert item in str(info.value)
