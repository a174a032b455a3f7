"""``mc_samples`` and ``verified_labels``: SV-UAMC sampling and self-verification, one step.

Both tables come from one pass of :func:`seke.sv_uamc.run_sampling`: the loop must aggregate
after every round to decide whether to stop, and verification needs the annotator that is
already open, so one step (holding the ``vllm`` concurrency pool) writes both partitions.
"""

import json

import polars as pl
import pyarrow as pa
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext,
                     AssetSpec, Backoff, Config, Failure, MaterializeResult, MetadataValue, RetryPolicy,
                     multi_asset)
from pydantic import Field

from seke.calibration import read_current_calibration
from assets.common import OWNERS, lake_partition, table_metadata, tags
from assets.publish import Audited, Blocked, fail_blocked, publish
from seke.knowledge import read_current_knowledge
from expectations.checks import check_specs
from expectations.gates import GateConfig, evaluate
from assets.partitions import batches, one_batch_per_run
from resources.annotator import AnnotatorResource
from resources.config_models import derived, values_for
from resources.deployment import api_op_tags
from resources.lake import LakeResource
from seke import quarantine, schemas
from seke.label_noise import audit_human_labels
from seke.audit import AUDIT_FLOORS, audit_check, audit_report, gold_for_hidden
from seke.evaluate import png_markdown
from seke.label_plots import partition_plots
from seke.records import face_items, known_labels
from seke.estimate import Estimate, estimate_run, history_from_lake
from seke.prompts import prompt_specs
from seke.selective import selective_acceptance
from seke.sv_uamc import SamplingConfig, run_sampling
from seke.annotators.vllm_batch_rounds import BatchSettings, batch_reports
from seke.pool import billed_usd


class _SamplingRunMethods(Config):
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(**values_for(SamplingConfig, self))

    def batch(self) -> BatchSettings | None:
        if not self.batch_api:  # type: ignore[attr-defined]
            return None
        return BatchSettings(poll_s=self.batch_poll_s, timeout_s=self.batch_timeout_s,  # type: ignore[attr-defined]
                             verify=self.batch_verify)  # type: ignore[attr-defined]

    def gates(self) -> GateConfig:
        return GateConfig(self.gate_consistency_floor, self.gate_flag_rate_ceiling)  # type: ignore[attr-defined]


#: Run config of ``annotate_faces``: every :class:`SamplingConfig` field (defaults chosen by
#: bench/sv_uamc.py) plus the thresholds of the consistency gates.
SamplingRunConfig = derived(
    "SamplingRunConfig", _SamplingRunMethods, SamplingConfig, "SV-UAMC parameters and the consistency gates.",
    gate_consistency_floor=(float, Field(GateConfig.consistency_floor, description="blocking check: least share "
                                         "of accepted faces with no consistency flag; below it nothing is published")),
    gate_flag_rate_ceiling=(float, Field(GateConfig.flag_rate_ceiling, description="warn check: most share of "
                                         "faces with one consistency flag")),
    selective=(bool, Field(True, description="apply the certified thresholds of the current certificate set "
                                             "(refit_calibration) that match this source and these "
                                             "annotator/knowledge/prompt versions; labels below abstain")),
    dry_run=(bool, Field(False, description="estimate calls, tokens and USD per annotator from the real "
                                            "prompts and stop before any model call (the step fails on "
                                            "purpose with the estimate in its metadata; nothing is written)")),
    batch_api=(bool, Field(False, description="buy every SV-UAMC round (only the faces still uncertain) and "
                                              "the verifications through the OpenAI Batch API, one job each, "
                                              "at the batch price; what a job does not return goes online "
                                              "(backfills: a job may take up to 24 h)")),
    batch_poll_s=(float, Field(BatchSettings.poll_s, description="seconds between Batch job status polls")),
    batch_timeout_s=(float, Field(BatchSettings.timeout_s, description="a job still running after this "
                                  "long is cancelled and its unfinished requests go online")),
    batch_verify=(bool, Field(BatchSettings.verify, description="with batch_api: verification jobs too")),
)


def _estimate(items, prompts: pl.DataFrame, annotator: AnnotatorResource, store, cfg: SamplingConfig,
              knowledge, batch_api: bool = False) -> Estimate:
    """The run's cost estimate from the real prompts and the lake's statistics of earlier runs
    with the same strategy (no call)."""
    members, strategy, verifier = annotator.estimate_plan(batch_api)
    return estimate_run(items, prompt_specs(prompts), members, cfg, history_from_lake(store, cfg.strategy),
                        strategy, verifier, knowledge,
                        cross_check=bool(getattr(annotator, "pool_cross_check", True)))


def _estimate_vs_actual(est: Estimate, s_df: pl.DataFrame, stats: dict, billed: float | None = None) -> dict:
    """Metadata: what the estimate said before the run beside what the run spent (``billed``:
    the annotators' own accounting, verification included; else the samples' cost)."""
    actual_usd = billed if billed is not None else (float(s_df["cost_usd"].sum() or 0.0) if s_df.height else 0.0)
    paid = s_df.filter(~pl.col("cache_hit")) if s_df.height else s_df
    actual_in = int(paid["prompt_tokens"].sum() or 0) if paid.height else 0
    actual_out = int(paid["completion_tokens"].sum() or 0) if paid.height else 0
    def err(e: float, a: float) -> float:
        return round((e - a) / a, 4) if a else 0.0
    return {
        "estimate_usd": MetadataValue.float(round(est.usd, 6)),
        "estimate_calls": MetadataValue.float(round(est.calls, 1)),
        "estimate_input_tokens": MetadataValue.int(int(est.input_tokens)),
        "estimate_output_tokens": MetadataValue.int(int(est.output_tokens)),
        "estimate_vs_actual": MetadataValue.json({
            "usd": [round(est.usd, 6), round(actual_usd, 6), err(est.usd, actual_usd)],
            "calls": [round(est.calls, 1), int(stats.get("calls", 0)), err(est.calls, stats.get("calls", 0))],
            "input_tokens": [int(est.input_tokens), actual_in, err(est.input_tokens, actual_in)],
            "output_tokens": [int(est.output_tokens), actual_out, err(est.output_tokens, actual_out)],
            "columns": ["estimate", "actual", "relative_error"], "encoding": est.encoding,
            "note": "actual usd: every billed call (samples, verification, repairs, Batch jobs); "
                    "actual tokens: samples only (verification is not in mc_samples); cache hits are free"}),
    }


@multi_asset(
    specs=[AssetSpec("mc_samples", deps=["raw_faces", "knowledge_prompts"], group_name="annotation",
                     owners=OWNERS, tags=tags("annotation"),
                     kinds={"delta"},
                     description="One row per annotator sample: prompt hash, round, index, backend, "
                                 "model, temperature, raw text, parsed fields, parse status, tokens, "
                                 "latency, cost, cache hit."),
           AssetSpec("verified_labels", deps=["mc_samples"], group_name="annotation", kinds={"delta"},
                     owners=OWNERS, tags=tags("annotation"),
                     description="One row per face: final expression/VA/AUs with calibrated confidence, "
                                 "uncertainty, samples spent, stop reason, verification verdict, "
                                 "consistency score and flags, origin per granularity, accepted or abstained.")],
    partitions_def=batches, pool="vllm", can_subset=False, name="annotate_faces",
    op_tags=api_op_tags(),
    # transient endpoint failures (timeouts, 5xx after the SDK's own retries) retry the step; the
    # cache makes a retry pay only for unfinished samples. A failed blocking check is not
    # retried (assets.publish.fail_blocked raises Failure(allow_retries=False)).
    retry_policy=RetryPolicy(max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL),
    backfill_policy=one_batch_per_run,
    check_specs=check_specs("mc_samples", "mc_samples", batches)
    + check_specs("verified_labels", "verified_labels", batches)
    + [AssetCheckSpec("audit_quality", asset="verified_labels",
                      description="[warn] audit mode: generated labels agree with the hidden human "
                                  "labels above the floors (accuracy, AU F1, valence sign)")],
)
def annotate_faces(context: AssetExecutionContext, config: SamplingRunConfig, lake: LakeResource,
                   annotator: AnnotatorResource):
    """Run SV-UAMC on every face of the batch and write samples and verified labels."""
    part = lake_partition(context)
    store = lake.lake()
    faces = store.read_partition("raw_faces", part)
    prompts = store.read_partition("knowledge_prompts", part)
    k = read_current_knowledge(store)
    hidden = {r["face_id"]: r["audit_hidden"] for r in prompts.iter_rows(named=True) if r["audit_hidden"]}
    items = face_items(faces, part["source"], hidden)
    splits = {r["face_id"]: r["split"] for r in faces.iter_rows(named=True) if r["split"]}
    cfg = config.sampling()
    estimate = _estimate(items, prompts, annotator, store, cfg, k, config.batch_api)
    if config.dry_run:
        context.log.info("dry run estimate:\n" + estimate.table())
        raise Failure(description=f"dry run: estimate only, no model called, nothing written "
                                  f"(expected ${estimate.usd:.4f}, {estimate.calls:.0f} calls)",
                      metadata={"estimate": MetadataValue.json(estimate.as_dict()),
                                "estimate_usd": MetadataValue.float(round(estimate.usd, 6))},
                      allow_retries=False)
    engine = annotator.build(k, store, batch=config.batch())
    calibration = read_current_calibration(store)
    prompt_versions = sorted({v for v in prompts["prompt_version"].to_list() if v}) if prompts.height else []
    versions = {"annotator": f"{engine.backend}/{engine.model}", "knowledge": k.version,
                "prompt": prompt_versions[0] if len(prompt_versions) == 1 else ",".join(prompt_versions)}
    acceptance, selective_info = selective_acceptance(store, part["source"], versions, config.selective)
    for msg in selective_info.get("refused", []):
        context.log.warning(msg)
    context.log.info(f"{len(items)} faces, annotator {engine.backend}/{engine.model}, strategy {cfg.strategy}, "
                     f"selective acceptance: {selective_info['status']}")
    try:
        result = run_sampling(items, prompt_specs(prompts), engine, k, cfg, audit_hidden=hidden,
                              splits=splits, calibration=calibration, acceptance=acceptance)
    finally:
        if hasattr(engine, "close"):  # VLLM: release the loop thread and HTTP connections
            engine.close()
    endpoint_stats = engine.stats.as_metadata() if hasattr(engine, "stats") else {}
    member_stats = engine.member_stats() if hasattr(engine, "member_stats") else {}
    batch_api = batch_reports(engine)

    samples = schemas.conform(pa.Table.from_pylist(result.samples) if result.samples
                              else schemas.MC_SAMPLES.empty_table(), schemas.MC_SAMPLES)
    labels = schemas.conform(pa.Table.from_pylist(result.labels) if result.labels
                             else schemas.VERIFIED_LABELS.empty_table(), schemas.VERIFIED_LABELS)
    # Suspected human-label errors (audit-mode faces: out-of-sample probabilities), marked only.
    labels = schemas.conform(audit_human_labels(pl.from_arrow(labels), faces).to_arrow(), schemas.VERIFIED_LABELS)
    s_df, l_df = pl.from_arrow(samples), pl.from_arrow(labels)
    secrets = getattr(engine, "secrets", ())  # the VLLM key: no piece of it in quarantine details
    failed = quarantine.from_samples(s_df, secrets)
    abstained = quarantine.from_labels(l_df, secrets)
    sampled_faces = int(l_df.filter(pl.col("n_samples") > 0).height) if l_df.height else 0
    audited = [Audited("mc_samples", samples, evaluate("mc_samples", s_df, input_rows=sampled_faces), "mc_samples"),
               Audited("verified_labels", labels, evaluate("verified_labels", l_df, input_rows=faces.height,
                                                           knowledge=k, config=config.gates()), "verified_labels")]
    try:
        commits, results = publish(context, store, part, audited, side_tables=[
            ("quarantine", {**part, "stage": "mc_samples"}, failed),
            ("quarantine", {**part, "stage": "verified_labels"}, abstained)])
    except Blocked as blocked:
        yield from fail_blocked(blocked)
    stats = result.stats
    gold = gold_for_hidden({r["face_id"]: known_labels(r) for r in faces.iter_rows(named=True)}, hidden)
    audit = audit_report(result.labels, gold)
    plots = {name: MetadataValue.md(png_markdown(png, name)) for name, png in partition_plots(l_df, gold).items()}
    audit_passed, audit_failing = audit_check(audit)
    yield MaterializeResult(asset_key="mc_samples", metadata={
        **table_metadata(samples, commits["mc_samples"], ["face_id", "round", "sample_index", "expression", "valence",
                                           "arousal", "parse_status", "latency_ms"]),
        "annotator": MetadataValue.text(f"{engine.backend}/{engine.model}"),
        "strategy": MetadataValue.text(cfg.strategy),
        **{f"endpoint/{name}": (MetadataValue.int(v) if isinstance(v, int) else MetadataValue.float(float(v)))
           for name, v in endpoint_stats.items()},
        "model_calls": MetadataValue.int(int(stats.get("calls", samples.num_rows))),
        "calls_per_face": MetadataValue.float(float(samples.num_rows) / max(1, len(items))),
        "parse_failures": MetadataValue.int(failed.height),
        "cache_hits": MetadataValue.int(int(s_df["cache_hit"].sum() or 0)) if s_df.height else MetadataValue.int(0),
        "tokens": MetadataValue.int(int((s_df["prompt_tokens"].sum() or 0) + (s_df["completion_tokens"].sum() or 0))) if s_df.height else MetadataValue.int(0),
        "cost_usd": MetadataValue.float(float(s_df["cost_usd"].sum() or 0.0)) if s_df.height else MetadataValue.float(0.0),
        "mean_latency_ms": MetadataValue.float(float(s_df["latency_ms"].mean() or 0.0)) if s_df.height else MetadataValue.float(0.0),
        **({"pool": MetadataValue.json(json.loads(json.dumps(
            {"strategy": stats.get("pool_strategy"), "members": stats.get("pool"), "endpoints": member_stats},
            default=str)))} if member_stats else {}),
        **_estimate_vs_actual(estimate, s_df, stats, billed_usd(engine)),
        **({"batch_api": MetadataValue.json(batch_api)} if batch_api else {}),
    }, check_results=[r for r in results if r.asset_key.to_user_string() == "mc_samples"])
    yield MaterializeResult(asset_key="verified_labels", metadata={
        **table_metadata(labels, commits["verified_labels"], ["face_id", "status", "expression", "expression_confidence",
                                          "valence", "arousal", "aus", "n_samples", "stop_reason", "verdict"]),
        "accepted": MetadataValue.int(len(result.labels) - abstained.height),
        "abstained": MetadataValue.int(abstained.height),
        "sampling_stats": MetadataValue.json(json.loads(json.dumps(stats, default=str))),
        "calibration_version": MetadataValue.text(calibration.version if calibration else "none (raw confidences)"),
        "selective_acceptance": MetadataValue.json(json.loads(json.dumps(
            {**selective_info, "abstained_below_threshold": acceptance.abstained if acceptance else 0}, default=str))),
        "audit": MetadataValue.json(json.loads(json.dumps(audit, default=str))),
        **plots,
        "label_issues": MetadataValue.int(int(l_df["label_issue"].fill_null(False).sum()) if l_df.height else 0),
        "label_issue_checked": MetadataValue.int(int(l_df["label_issue"].is_not_null().sum()) if l_df.height else 0),
    }, check_results=[r for r in results if r.asset_key.to_user_string() == "verified_labels"]
       + [AssetCheckResult(check_name="audit_quality", asset_key="verified_labels", passed=audit_passed,
                           severity=AssetCheckSeverity.WARN,
                           metadata={"audit_faces": MetadataValue.int(int(audit.get("audit_faces") or 0)),
                                     "below_floor": MetadataValue.json(audit_failing),
                                     "floors": MetadataValue.json(AUDIT_FLOORS)})])
