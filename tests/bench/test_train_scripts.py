"""The GPU-machine scripts run end to end on CPU with a tiny configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.seke.train.conftest import _one_torch_thread  # noqa: E402,F401  (autouse: 1 torch thread)

from seke.train.arrays import FaceArrays, from_feid  # noqa: E402
from seke.train.packing import save_npz  # noqa: E402
from tests.seke.train.synthetic import feid_rows  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    """A bench script as a module, importable by name (spawned worker processes unpickle its
    functions by module name, and inherit this ``sys.path``)."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory) -> Path:
    train, _ = from_feid(feid_rows(40, seed=1), image_size=48)
    val, _ = from_feid(feid_rows(16, seed=2, start=500), image_size=48)
    train.split[:] = "train"
    val.split[:] = "validation"
    folder = tmp_path_factory.mktemp("npz")
    save_npz(FaceArrays.concat([train, val]), folder / "synthetic.npz",
             {"data_version": "synthetic", "set": "synthetic", "labels": "simulated"})
    return folder


def test_train_fer_script_prints_result(npz_dir: Path, tmp_path: Path, capsys):
    torch.set_num_threads(1)
    rc = _load("train_fer").main(["--npz", str(npz_dir), "--tiny", "--epochs", "2", "--batch-size", "8",
                                  "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("RESULT source=simulated data=synthetic[train]:40,synthetic[validation]:16 ")
    kv = dict(x.split("=", 1) for x in lines[-1].split()[1:])
    # the baseline is measured on the same validation faces: their commonest expression's share
    val, _ = from_feid(feid_rows(16, seed=2, start=500), image_size=48)
    counts = np.bincount(val.expression[val.expression >= 0])
    assert float(kv["class_prior_acc"]) == pytest.approx(counts.max() / counts.sum(), abs=1e-4)
    for key in ("fer_val_acc", "fer_val_acc_notta"):
        assert 0.0 <= float(kv[key]) <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data_version"] == "synthetic" and summary["epochs_run"] == 2
    assert summary["evaluation"]["fer2013_validation"]["faces"] == 16
    assert (Path(summary["checkpoint"]) / "manifest.json").is_file()


def test_train_fer_without_data_exits_non_zero(tmp_path: Path, capsys):
    train_fer = _load("train_fer")
    assert train_fer.main(["--npz", str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert train_fer.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert train_fer.main(["--out", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and out.err.count("no data") == 3


def test_throughput_script_reports_cpu_and_nan_gpu(npz_dir: Path, capsys):
    if torch.cuda.is_available():
        pytest.skip("GPU present: the full benchmark is the check")
    rc = _load("train_throughput").main(["--npz", str(npz_dir), "--recipe", "compact", "--batch", "8",
                                         "--cpu-steps", "1", "--rounds", "1", "--threads", "1"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(kv.split("=", 1) for kv in last.split()[1:])
    assert last.startswith("RESULT source=") and fields["recipe"] == "compact" and fields["batch"] == "8"
    assert fields["gpu_cpu_ratio"] == "nan" and fields["images_per_s_gpu"] == "nan"
    now, before = float(fields["images_per_s_cpu"]), float(fields["images_per_s_cpu_before"])
    assert now > 0 and before > 0
    assert fields["lanes"] == "2" and float(fields["images_per_s_cpu_lanes"]) > 0  # two processes side by side
    assert abs(float(fields["cpu_speedup"]) - now / before) < 0.01


def test_throughput_script_times_the_layout_with_the_48px_block(npz_dir: Path, capsys):
    _load("train_throughput").main(["--npz", str(npz_dir), "--recipe", "compact", "--batch", "8",
                                    "--cpu-steps", "1", "--rounds", "1", "--threads", "1", "--lanes", "0"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("recipe with a 48-px block (the layout before)")]
    assert len(rows) == 1 and float(rows[0].split()[-2]) > 0  # images/s column, then "N.NNx"


def test_ablation_refuses_a_block_layout_that_does_not_fit_before_building_anything(tmp_path: Path, capsys):
    ablation = _load("train_ablation")
    assert ablation._blocks("", "compact") == ()
    assert ablation._blocks("0,1,1,1", "compact") == (0, 1, 1, 1)
    for bad in ("1,1", "0,0,0,0", "1,-1,1,1", "a,1,1,1"):
        assert ablation._blocks(bad, "compact") is None, bad
    sets = {}
    for name in ("fer2013", "ckplus"):
        sets[name] = tmp_path / name
        sets[name].mkdir()
        (sets[name] / "manifest.csv").write_text("image,expression,subject_id\n")
    work = tmp_path / "work"
    rc = ablation.main(["--fer-dir", str(sets["fer2013"]), "--ckplus-dir", str(sets["ckplus"]),
                        "--work", str(work), "--blocks", "1,1"])
    out = capsys.readouterr()
    assert rc == 2 and "refused: --blocks '1,1'" in out.err and "RESULT" not in out.out
    assert not work.exists()  # no landing, lake or Dagster instance was made
    for bad, says in ((["--set", "aug_erase_p=lots"], "refused: --set 'aug_erase_p=lots'"),
                      (["--set", "no_such_field=1"], "refused: --set 'no_such_field=1'"),
                      (["--lanes", "-1"], "refused: --lanes must be"), (["--threads", "0"], "refused: --lanes must be")):
        rc = ablation.main(["--fer-dir", str(sets["fer2013"]), "--ckplus-dir", str(sets["ckplus"]),
                            "--work", str(work)] + bad)
        out = capsys.readouterr()
        assert rc == 2 and says in out.err and "RESULT" not in out.out
        assert not work.exists()


def test_checkpoint_eval_scores_an_ensemble_as_one_column(tmp_path: Path, monkeypatch, capsys):
    """``A,B`` is scored on the members' averaged predictions, each member with its own recipe."""
    from seke.train.checkpoint import save_checkpoint
    from seke.train.config import TrainConfig
    from seke.train.evaluate import expression_metrics, predict
    from seke.train.trainer import train

    arrays, _ = from_feid(feid_rows(40, seed=3), image_size=24)
    models, paths = [], []
    for seed in (1, 2):
        cfg = TrainConfig.tiny(max_steps=4, batch_size=8, seed=seed)
        model = train(arrays, cfg, device="cpu", log=lambda _: None).model
        models.append((model, cfg))
        paths.append(save_checkpoint(model, cfg, {"config_digest": cfg.digest()}, str(tmp_path / f"c{seed}")))
    ce = _load("checkpoint_eval")
    monkeypatch.setattr(ce, "load_fer_validation", lambda size=48: arrays)
    monkeypatch.setattr(ce, "load_ckplus", lambda size=48: None)
    name, out = ce.score(",".join(paths))
    preds = [predict(m, arrays.images, "cpu", c)["expression_probs"] for m, c in models]
    target = np.where(arrays.expression_w > 0, arrays.expression, -1)
    want = expression_metrics((preds[0] + preds[1]) / 2, target)
    assert name == "ensemble of 2: tiny+tiny" and out["ckplus"] == {}
    assert out["fer2013_validation"]["expression"]["accuracy"] == want["accuracy"]
    assert ce.main([paths[0], ",".join(paths)]) == 0
    assert "RESULT source=checkpoint" in capsys.readouterr().out
