"""``evaluation``: score an annotator (offline, VLLM, trained checkpoint) on the whole FEAB."""

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import OWNERS, tags
from resources.annotator import AnnotatorResource
from resources.lake import LakeResource
from seke.evaluate import (comparison_table, load_annotator, markdown_table, png_markdown,
                           read_evaluations, run_evaluation)


class EvaluationConfig(Config):
    annotator_spec: str = Field(
        default="", description="empty: the `annotator` resource (offline | vllm); or "
                                "'package.module:factory' for e.g. a trained checkpoint")
    checkpoint: str = Field(default="", description="passed to the factory as checkpoint=")
    model_label: str = Field(default="", description="name in the comparison table (default backend/model)")
    n_samples: int = Field(default=1, ge=1, description="samples per face, aggregated like SV-UAMC")
    batch_size: int = Field(default=16, ge=1)
    run_id: str = Field(default="", description="default: a new timestamped id")
    feab_version: int = Field(default=-1, description="FEAB table version to score on (-1: the latest)")


@asset(deps=["feab"], group_name="evaluation", kinds={"delta"}, owners=OWNERS, tags=tags("evaluation"))
def evaluation(context: AssetExecutionContext, config: EvaluationConfig, lake: LakeResource,
               annotator: AnnotatorResource) -> MaterializeResult:
    """Scores of one model on FEAB against human gold (accuracy/macro-F1, VA RMSE/CCC/sign,
    per-AU F1, ECE, Brier); agreement with generated gold and with its own labels apart,
    stored per model and run in `evaluations` / `evaluation_predictions`, with a confusion
    matrix, a VA scatter and the comparison table across every model evaluated so far."""
    store_ = lake.lake()

    def make_annotator(knowledge):
        if config.annotator_spec:
            extra = {"checkpoint": config.checkpoint} if config.checkpoint else {}
            return load_annotator(config.annotator_spec, knowledge, **extra)
        return annotator.build(knowledge, store_)

    run = run_evaluation(store_, make_annotator, feab_version=None if config.feab_version < 0 else config.feab_version,
                         model=config.model_label or None, run_id=config.run_id or None,
                         n_samples=config.n_samples, batch_size=config.batch_size,
                         progress=lambda done, total: context.log.info(f"{done}/{total} faces"))
    for note in run.notes:
        context.log.warning(note)
    result, commits, feab_version = run.result, run.commits, run.feab_version
    table = comparison_table(read_evaluations(store_))
    meta = {
        "model": MetadataValue.text(result.model),
        "run_id": MetadataValue.text(result.run_id),
        "faces": MetadataValue.int(result.items["face_id"].n_unique()),
        "items": MetadataValue.int(result.items.height),
        "metrics": MetadataValue.json({k: v for k, v in result.summary("human").items() if v is not None}),
        "agreement_generated_gold": MetadataValue.json(
            {k: v for k, v in result.summary("generated").items() if v is not None}),
        "self_agreement_own_labels": MetadataValue.json(
            {k: v for k, v in result.summary("self_agreement").items() if v is not None}),
        "comparison": MetadataValue.md(markdown_table(table)),
        "path": MetadataValue.path(commits["evaluations"].uri),
        "feab_table_uri": MetadataValue.path(store_.table_uri("feab")),
        "feab_version": MetadataValue.int(feab_version) if feab_version is not None else MetadataValue.text("none"),
        "versions": MetadataValue.json(run.versions),
    }
    for name, png in result.plots.items():
        meta[name] = MetadataValue.md(png_markdown(png, name))
    return MaterializeResult(metadata=meta)
