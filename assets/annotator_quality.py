"""``annotator_quality``: the offline annotator's quality report on labelled dev sets (issue 9).

Thin wiring: the measurement is :func:`seke.vision.quality.evaluate_set`; this asset runs it on
the configured sets, writes one row per set to the lake table ``annotator_quality`` (partition
``run=<id>``) and shows the figures in the UI.
"""

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import OWNERS, tags
from resources.data import DevDataResource
from resources.lake import LakeResource

DEV_SETS = ("ckplus", "fer2013", "wild")
SCALARS = ("n", "failed", "expr_acc", "expr_acc_bare", "expr_macro_f1", "ece", "au_f1_known", "au_f1_blind",
           "au_f1_prior_only", "au_f1_known_all", "au_f1_blind_all", "au_f1_prior_only_all", "valence_sign_acc")


class AnnotatorQualityConfig(Config):
    data_dirs: list[str] = Field(default_factory=list,
                                 description="set folders in the ../shared/data manifest format "
                                             "(empty: ckplus, fer2013 and wild of the dev_data resource)")
    samples: int = Field(default=1, ge=1, description="TTA samples per face")
    limit: int = Field(default=0, ge=0, description="at most N faces per set (0 = all)")
    seed: int = 0
    run_id: str = Field(default="", description="default: a UTC timestamp")


def _markdown(frame: pl.DataFrame) -> str:
    fmt = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


@asset(group_name="evaluation", kinds={"delta"}, owners=OWNERS, tags=tags("evaluation"))
def annotator_quality(context: AssetExecutionContext, config: AnnotatorQualityConfig,
                      lake: LakeResource, dev_data: DevDataResource) -> MaterializeResult:
    """Offline annotator quality on labelled sets: expression accuracy/macro-F1/ECE beside the bare
    model, AU F1 with the expression known, blind and knowledge-prior-only, valence sign agreement."""
    from seke.annotators.offline import OfflineAnnotator
    from seke.knowledge import knowledge_v1, knowledge_with_estimate
    from seke.vision.au_evidence import with_au_calibration
    from seke.vision.quality import evaluate_set

    wanted = config.data_dirs or [str(dev_data.set_dir(s)) for s in DEV_SETS]
    dirs = [Path(d) for d in wanted if (Path(d) / "manifest.csv").exists()]
    missing = [d for d in wanted if not (Path(d) / "manifest.csv").exists()]
    for d in missing:
        context.log.warning(f"skipping {d}: no manifest.csv")
    ck = next((d for d in dirs if d.name == "ckplus"), dev_data.set_dir("ckplus"))
    knowledge = (knowledge_with_estimate(pl.read_csv(ck / "manifest.csv"), "ckplus")
                 if (ck / "manifest.csv").exists() else knowledge_v1())
    ann = OfflineAnnotator(with_au_calibration(knowledge), seed=config.seed)
    rows = []
    for d in dirs:
        r = evaluate_set(d.name, d, ann, knowledge, config.samples, config.limit or None, verbose=False)
        rows.append({"set": d.name, **{k: (float(r[k]) if k in r else None) for k in SCALARS}})
        context.log.info(f"{d.name}: {r['n']} faces")
    run_id = config.run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    frame = pl.DataFrame(rows, schema={"set": pl.String, **{k: pl.Float64 for k in SCALARS}}).with_columns(
        pl.lit(ann.model).alias("model"), pl.lit(config.samples).alias("samples"))
    path = lake.lake().write_partition("annotator_quality", {"run": run_id}, frame) if rows else None
    return MaterializeResult(metadata={
        "model": MetadataValue.text(ann.model),
        "sets": MetadataValue.int(len(rows)),
        "figures": MetadataValue.md(_markdown(frame.drop("model")) if rows else "no data"),
        **({"path": MetadataValue.path(path.uri)} if path else {}),
    })
