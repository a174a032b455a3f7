"""The shared dev sets the training assets evaluate on (skipped without ../shared/data)."""

from __future__ import annotations

from seke.taxonomy import AU_CATALOGUE
from seke.train.run import load_ckplus, load_fer_validation


def test_ckplus_brings_human_facs_codes(shared_data):
    ck = load_ckplus(48, shared_data / "ckplus")
    assert len(ck) == 750 and (ck.aus_w == 1).all() and (ck.expression >= 0).all()
    prevalence = dict(zip(AU_CATALOGUE, ck.aus.mean(axis=0)))
    assert prevalence[25] > 0.3 and prevalence[27] < prevalence[25]  # README: AU25 common, AU27 rare

def test_fer_validation_is_the_validation_split_only(shared_data):
    val = load_fer_validation(48, shared_data / "fer2013")
    assert len(val) == 3589 and set(val.split) == {"validation"} and (val.aus_w == 0).all()

def test_absent_sets_are_none(tmp_path):
    assert load_ckplus(48, tmp_path) is None and load_fer_validation(48, tmp_path) is None
