"""Helpers for ops tests: build a small real landing batch and run the core graph on it.

The graph is taken from ``pipelines.definitions.defs`` (whatever assets and resources the code
location has), with only ``lake`` and ``landing`` re-pointed at the test's lake URI and landing
folder, so these tests follow the graph as it grows.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from dagster import AssetSpec, AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

from tests.conftest import shared_data_dir


def make_landing_batch(landing: Path, source: str, batch: str, n: int = 6) -> Path:
    """``landing/<source>/<batch>/`` with ``n`` real CK+ faces and their manifest rows.

    Falls back to the sample photos fetched by ``seke fetch-weights`` when ../shared/data is
    absent; skips the test when neither exists.
    """
    folder = landing / source / batch
    folder.mkdir(parents=True, exist_ok=True)
    ck = shared_data_dir() / "ckplus"
    if (ck / "manifest.csv").exists():
        with open(ck / "manifest.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [r for r in reader][: n * 3: 3][:n]   # every 3rd frame: distinct faces
            fields = reader.fieldnames
        (folder / "images").mkdir(exist_ok=True)
        for r in rows:
            shutil.copy(ck / r["image"], folder / r["image"])
        with open(folder / "manifest.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        return folder
    try:
        from seke.weights import samples_dir
        src = samples_dir()
    except Exception as exc:  # weights not fetched
        pytest.skip(f"no faces for a landing batch: ../shared/data absent and samples missing ({exc})")
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    if not photos:
        pytest.skip("no sample photos for a landing batch")
    for p in photos:
        shutil.copy(p, folder / p.name)
    (folder / "manifest.csv").write_text("image\n" + "".join(f"{p.name}\n" for p in photos))
    return folder


def graph_resources(lake_uri: str, landing: Path) -> dict:
    """The code location's resources as the environment configures them *now*, on this lake."""
    from resources.landing import LandingZoneResource
    from resources.lake import LakeResource
    from resources.settings import default_resources

    res = default_resources()
    return {**res,
            "lake": LakeResource(uri=lake_uri, s3=res["s3"]),
            "landing": LandingZoneResource(path=str(landing))}


def batch_selection() -> AssetSelection:
    """The assets the code location's ``annotate_batch`` job materializes, as plain keys."""
    from pipelines.definitions import defs

    return AssetSelection.assets(*defs.resolve_job_def("annotate_batch").asset_layer.selected_asset_keys)


def run_knowledge(instance: DagsterInstance, lake_uri: str, landing: Path) -> ExecuteInProcessResult:
    from pipelines.definitions import defs
    executable = [a for a in defs.assets if not isinstance(a, AssetSpec)]   # lake-table specs are external
    return materialize(executable, selection=AssetSelection.assets("knowledge"),
                       instance=instance, resources=graph_resources(lake_uri, landing))


def run_batch(instance: DagsterInstance, lake_uri: str, landing: Path, key: str,
              raise_on_error: bool = True, tags: dict | None = None,
              selection: AssetSelection | None = None,
              run_config: dict | None = None) -> ExecuteInProcessResult:
    """Materialize the ``annotate_batch`` selection (or ``selection``) for one partition key."""
    from pipelines.definitions import defs
    from assets.partitions import batches

    if key not in instance.get_dynamic_partitions(batches.name):
        instance.add_dynamic_partitions(batches.name, [key])
    executable = [a for a in defs.assets if not isinstance(a, AssetSpec)]   # lake-table specs are external
    return materialize(executable, selection=selection or batch_selection(), partition_key=key,
                       instance=instance, resources=graph_resources(lake_uri, landing),
                       raise_on_error=raise_on_error, tags=tags, run_config=run_config)


def batch_asset_keys() -> list[str]:
    from pipelines.definitions import defs
    sel = batch_selection().resolve([a for a in defs.assets if not isinstance(a, AssetSpec)])
    return sorted(k.to_user_string() for k in sel)


def require_full_graph() -> None:
    """Skip (with the reason) when the default annotator of the code location cannot be built."""
    from resources.settings import annotator_kind

    kind = annotator_kind()
    if kind == "offline":
        try:
            import seke.annotators.offline  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"offline annotator not available yet ({exc}); the graph cannot annotate")
