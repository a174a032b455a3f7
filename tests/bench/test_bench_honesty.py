"""Quality benches measure what they say and refuse to measure nothing (issue 15, item 5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _fer_like(root: Path, split: str) -> Path:
    d = root / "fer2013"
    d.mkdir(parents=True)
    pl.DataFrame({"image": ["a.png"], "split": [split], "expression": ["happy"]}).write_csv(d / "manifest.csv")
    return root


def test_sv_uamc_without_real_data_exits_non_zero_instead_of_simulating(tmp_path, capsys):
    sv = _load("sv_uamc")
    assert sv.main(["--data", str(tmp_path / "nowhere")]) == 2
    # a FER-like set whose dev split is named otherwise: an error naming its splits, not 0 faces
    assert sv.main(["--data", str(_fer_like(tmp_path / "d", "PublicTest"))]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and "PublicTest" in out.err and "--simulated" in out.err


def test_sv_uamc_simulated_result_says_so(capsys):
    sv = _load("sv_uamc")
    assert sv.main(["--simulated", "--faces", "40", "--regimes", "default"]) == 0
    result = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("RESULT ")]
    assert len(result) == 1
    kv = dict(x.split("=", 1) for x in result[0].split()[1:])
    assert kv["source"] == "simulated" and kv["data"] == "simulated-default:40@seed23"
    for key in ("calls_ratio", "accepted_error_ratio", "fixed10_calls", "fixed10_acc",
                "single_shot_accepted_error", "sv_calls"):
        float(kv[key])
    assert float(kv["calls_ratio"]) == float(kv["sv_calls"]) / float(kv["fixed10_calls"]) or \
        abs(float(kv["calls_ratio"]) - float(kv["sv_calls"]) / float(kv["fixed10_calls"])) < 2e-3


def test_annotator_quality_without_the_asked_data_exits_non_zero(tmp_path, capsys):
    aq = _load("annotator_quality")
    assert aq.main(["--data", str(tmp_path / "missing")]) == 2
    root = _fer_like(tmp_path / "d", "train")
    assert aq.main(["--data", str(root / "fer2013")]) == 2
    assert "split='validation'" in capsys.readouterr().err
