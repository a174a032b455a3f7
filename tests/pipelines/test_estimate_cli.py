"""``seke estimate DIR`` through the installed entry point: real faces, configured prices, no call."""

from __future__ import annotations

import csv
import json
import shutil


def test_seke_estimate_prints_calls_tokens_and_usd(tmp_path, shared_data, monkeypatch, capsys):
    from pipelines.cli import main

    src = shared_data / "fer2013"
    rows = list(csv.DictReader(open(src / "manifest.csv", newline="")))[:4]
    folder = tmp_path / "faces"
    (folder / "images").mkdir(parents=True)
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "split", "expression"])
        w.writeheader()
        for r in rows:
            shutil.copy(src / r["image"], folder / r["image"])
            w.writerow({"image": r["image"], "split": r["split"], "expression": r["expression"]})
    monkeypatch.setenv("SEKE_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("SEKE_ANNOTATOR", "vllm")
    monkeypatch.setenv("SEKE_VLLM_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: no call may be made
    monkeypatch.setenv("SEKE_VLLM_PRICE_INPUT_PER_1M", "2.5")
    monkeypatch.setenv("SEKE_VLLM_PRICE_OUTPUT_PER_1M", "10")
    assert main(["estimate", str(folder), "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["faces"] >= 1 and est["usd"] > 0 and est["calls"] > 0
    (m,) = est["members"]
    assert m["model"] == "gpt-4o" and m["image_tokens"] > 0 and m["input_tokens"] > m["image_tokens"]
    assert abs(m["usd"] - (m["input_tokens"] * 2.5 + m["output_tokens"] * 10) / 1e6) < 1e-9
    assert "samples:prior" in m["source"]
    assert main(["estimate", str(tmp_path / "nope")]) == 2
