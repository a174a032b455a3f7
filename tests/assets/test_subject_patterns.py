"""Subjects read from file names reach the lake (the landing zone's ``subject_patterns``).

A batch whose manifest names no subject, with LFW-style file names, is ingested by the real
``raw_faces`` asset on a real instance: with the source's pattern configured (through the
environment, as a deployment sets it) every face carries its person; without it none does.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from dagster import DagsterInstance, materialize
from PIL import Image

from seke.lake import Lake

PATTERN = r"(?P<subject>.+)_\d+\.\w+"
FILES = {"Ann_Lee_0001.png": "anger", "Ann_Lee_0002.png": "anger", "Bo_0001.png": "fear",
         "Bo_0002.png": "fear", "Cy_0001.png": "happiness"}


def _land(root, source: str) -> None:
    folder = root / "landing" / source / "b1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for name in FILES:
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(folder / name)
    pl.DataFrame({"image": list(FILES), "expression": list(FILES.values())}).write_csv(folder / "manifest.csv")


def _subjects(root, source: str, monkeypatch, env: str | None) -> dict[str, str | None]:
    from assets.raw_faces import raw_faces
    from resources.settings import default_resources

    if env is not None:
        monkeypatch.setenv("SEKE_SUBJECT_PATTERNS", env)
    monkeypatch.setenv("SEKE_LANDING_DIR", str(root / "landing"))
    monkeypatch.setenv("SEKE_LAKE_URI", str(root / "lake"))
    resources = default_resources()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [f"{source}__b1"])
    result = materialize([raw_faces], resources={k: resources[k] for k in ("lake", "landing")},
                         partition_key=f"{source}__b1", instance=instance)
    assert result.success
    faces = Lake(str(root / "lake")).read_partition("raw_faces", {"source": source, "batch": "b1"})
    return dict(faces.select("file_name", "subject_id").iter_rows())


def test_configured_pattern_gives_every_face_its_person(tmp_path, monkeypatch):
    _land(tmp_path, "lfw")
    subjects = _subjects(tmp_path, "lfw", monkeypatch, f"lfw={PATTERN};other=(x)")
    assert subjects == {"Ann_Lee_0001.png": "Ann_Lee", "Ann_Lee_0002.png": "Ann_Lee", "Bo_0001.png": "Bo",
                        "Bo_0002.png": "Bo", "Cy_0001.png": "Cy"}


def test_without_a_pattern_for_the_source_faces_have_no_subject(tmp_path, monkeypatch):
    _land(tmp_path, "lfw")
    assert set(_subjects(tmp_path, "lfw", monkeypatch, f"other={PATTERN}").values()) == {None}


def test_a_bad_pattern_is_refused_when_the_settings_are_read(monkeypatch):
    from resources.settings import default_resources

    monkeypatch.setenv("SEKE_SUBJECT_PATTERNS", "lfw=(")
    with pytest.raises(ValueError, match="not a regular expression"):
        default_resources()
