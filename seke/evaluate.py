"""Score any annotator on FEAB: predictions, metrics, plots, stored per model and run.

Anything that implements :class:`seke.annotation.Annotator` can be evaluated — the offline
annotator, a VLLM behind the OpenAI-compatible endpoint, a trained checkpoint wrapped as an
annotator (:class:`CallableAnnotator`), the simulated one. Each benchmark face is sent once with
**no** known labels (the model must produce all three granularities; nothing of the gold leaks
into the prompt) and ``n_samples`` samples are aggregated with the same code SV-UAMC uses
(:mod:`seke.aggregate`), so "the annotator" means the same thing in the pipeline and here.

Per-item isolation: when a batch call raises, its faces are retried one by one and a face whose
call still raises gets an ``error`` and no prediction — it lowers ``coverage``, never sinks the
run. Metrics are computed on the items that have a prediction and reported with their coverage.

**Which gold counts** (:func:`gold_subsets`). Only human gold measures accuracy: subset
``human`` (``gold_flagged`` false) is the default everywhere (``summary()``, the comparison
table, the CLI, the asset's ``metrics``). Generated-and-verified gold is reported apart and named
for what it is: subset ``generated`` holds *agreement* with labels another annotator produced
(metric ``agreement``, never ``accuracy``; no ECE/Brier, which presuppose the truth), and items
whose gold the evaluated annotator produced itself (``label_generators``: the backend/model of
its ``mc_samples``) go to ``self_agreement`` — a model agreeing with its own output is
consistency, not quality (the demo, all of whose gold the offline annotator generated, used to
report "accuracy 1.0"). A mix of the two kinds is never scored as one figure.

Results are long-format rows (``EVALUATIONS``: one row per run × subset × task × metric) so a
comparison across models is a pivot, plus one row per item (``EVALUATION_PREDICTIONS``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from seke import metrics as M
from seke.aggregate import aggregate_aus, aggregate_expression, aggregate_va
from seke.annotation import (Annotator, FaceItem, Labels, PromptSpec, Sample, SampleRequest,
                             Verdict, VerifyRequest)
from seke.knowledge import Knowledge, knowledge_v1
from seke.schemas import conform
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

EVALUATIONS = pa.schema([
    ("run_id", pa.string()),
    ("model", pa.string()),
    ("backend", pa.string()),
    ("evaluated_at", pa.string()),        # ISO-8601 UTC
    ("feab_fingerprint", pa.string()),    # hash of the item ids scored
    ("subset", pa.string()),              # human | generated | self_agreement (see gold_subsets)
    ("task", pa.string()),                # expression | va | aus
    ("metric", pa.string()),
    ("value", pa.float64()),
    ("n_items", pa.int64()),              # items of this task in the subset (before coverage)
    ("detail", pa.string()),              # JSON for structured results (confusion matrix, per class)
])

EVALUATION_PREDICTIONS = pa.schema([
    ("run_id", pa.string()),
    ("model", pa.string()),
    ("item_id", pa.string()),
    ("face_id", pa.string()),
    ("task", pa.string()),
    ("gold_expression", pa.string()),
    ("gold_valence", pa.float64()),
    ("gold_arousal", pa.float64()),
    ("gold_aus", pa.list_(pa.int32())),
    ("gold_flagged", pa.bool_()),
    ("pred_expression", pa.string()),
    ("pred_expression_confidence", pa.float64()),
    ("pred_expression_probs", pa.list_(pa.float64())),
    ("pred_valence", pa.float64()),
    ("pred_arousal", pa.float64()),
    ("pred_aus", pa.list_(pa.int32())),
    ("correct", pa.bool_()),              # expression items: prediction == gold
    ("n_samples_ok", pa.int32()),
    ("cost_usd", pa.float64()),
    ("error", pa.string()),
])

#: Metrics shown in the cross-model comparison table, in order.
COMPARISON_METRICS: tuple[tuple[str, str], ...] = (
    ("expression", "accuracy"), ("expression", "macro_f1"), ("expression", "ece"),
    ("expression", "brier"), ("va", "rmse_valence"), ("va", "rmse_arousal"),
    ("va", "ccc_valence"), ("va", "ccc_arousal"), ("va", "sign_valence"), ("va", "sign_arousal"),
    ("aus", "mean_f1"), ("expression", "coverage"),
)


# ---- annotators -------------------------------------------------------------------------------

@dataclass
class CallableAnnotator:
    """Wrap a plain prediction function as an :class:`~seke.annotation.Annotator`.

    ``predict(faces) -> list[Labels | (Labels, expression_probs)]`` — one answer per face, e.g. a
    trained checkpoint's forward pass. Each request gets ``n`` copies of the answer (a
    deterministic model has no sampling spread); verification always accepts.
    """

    predict: Callable[[Sequence[FaceItem]], Sequence[Any]]
    backend: str = "checkpoint"
    model: str = "model"

    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        answers = list(self.predict([r.face for r in requests]))
        if len(answers) != len(requests):
            raise ValueError(f"predict returned {len(answers)} answers for {len(requests)} faces")
        out = []
        for req, ans in zip(requests, answers):
            labels, probs = (ans if isinstance(ans, tuple) else (ans, None))
            out.append([Sample(req.face.face_id, req.first_index + i, req.round, labels,
                               expression_probs=probs, backend=self.backend, model=self.model)
                        for i in range(req.n)])
        return out

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        return [Verdict(r.face.face_id, "accept", ["no verifier"], backend=self.backend,
                        model=self.model) for r in requests]


def constant_baseline(knowledge: Knowledge | None = None, seed: int = 0,
                      expression: str = "neutral", **_: Any) -> CallableAnnotator:
    """The chance-level reference row of the comparison table: always the same answer.

    Expression ``expression`` (default neutral), VA at that expression's circumplex centre, AUs
    the knowledge's likely AUs for it (P >= 0.5). Any model should beat it.
    """
    k = knowledge or knowledge_v1()
    region = k.va_regions[expression]
    aus = {au: 1.0 for au, p in k.au_prior(expression).items() if p >= 0.5}
    answer = Labels(expression, region.valence, region.arousal, aus)
    return CallableAnnotator(lambda faces: [answer for _ in faces], backend="baseline",
                             model=f"constant-{expression}")


def load_annotator(spec: str, knowledge: Knowledge, seed: int = 0, **kwargs: Any) -> Annotator:
    """Build an annotator from a spec: ``offline`` or ``package.module:factory``.

    ``factory(knowledge=..., seed=..., **kwargs)`` must return an Annotator (a class works);
    this is how a trained checkpoint plugs in (``--annotator seke.train.x:load --checkpoint P``).
    The VLLM annotator needs the endpoint resource: evaluate it through the Dagster
    ``evaluation`` asset (which builds it from the ``annotator`` resource), or pass its factory.
    """
    if spec == "offline":
        from seke.annotators.offline import OfflineAnnotator  # type: ignore[import-not-found]

        return OfflineAnnotator(knowledge, seed=seed)
    if ":" not in spec:
        raise ValueError(f"unknown annotator {spec!r}: use 'offline' or 'package.module:factory'")
    module, attr = spec.split(":", 1)
    factory = getattr(importlib.import_module(module), attr)
    ann = factory(knowledge=knowledge, seed=seed, **kwargs)
    if not isinstance(ann, Annotator):
        raise TypeError(f"{spec} returned {type(ann).__name__}, which is not an Annotator")
    return ann


# ---- predictions ------------------------------------------------------------------------------

def evaluation_prompt(knowledge: Knowledge) -> PromptSpec:
    """The annotation prompt with nothing known: the model answers all three granularities."""
    from seke.prompts import build_annotation_prompt

    return build_annotation_prompt(Labels(), knowledge)


def benchmark_faces(feab: pl.DataFrame) -> list[FaceItem]:
    """One FaceItem per benchmark face, with no known labels (gold never reaches the model)."""
    faces = feab.select("face_id", "image_png", *[c for c in ("subject_id", "source") if c in feab.columns]
                        ).unique("face_id", keep="first", maintain_order=True)
    return [FaceItem(r["face_id"], r["image_png"], Labels(), source=r.get("source") or "",
                     subject_id=r.get("subject_id")) for r in faces.iter_rows(named=True)]


def _call(annotator: Annotator, requests: list[SampleRequest]) -> list[tuple[list[Sample], str | None]]:
    """Samples per request; a raising batch is retried item by item (per-item errors)."""
    try:
        got = annotator.sample_batch(requests)
        if len(got) != len(requests):
            raise ValueError(f"annotator returned {len(got)} results for {len(requests)} requests")
        return [(list(s), None) for s in got]
    except Exception as batch_error:  # noqa: BLE001 - isolate items below
        if len(requests) == 1:
            return [([], f"{type(batch_error).__name__}: {batch_error}")]
        return [r for req in requests for r in _call(annotator, [req])]


def predict(annotator: Annotator, feab: pl.DataFrame, *, knowledge: Knowledge | None = None,
            prompt: PromptSpec | None = None, n_samples: int = 1, batch_size: int = 16,
            progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
    """One prediction row per benchmark face (aggregated over ``n_samples`` samples)."""
    prompt = prompt or evaluation_prompt(knowledge or knowledge_v1())
    faces = benchmark_faces(feab)
    rows = []
    for start in range(0, len(faces), batch_size):
        chunk = faces[start:start + batch_size]
        reqs = [SampleRequest(face=f, prompt=prompt, n=n_samples) for f in chunk]
        for face, (samples, error) in zip(chunk, _call(annotator, reqs)):
            ok = [s for s in samples if s.ok]
            if samples and not ok:
                error = "; ".join(sorted({s.error or "parse failed" for s in samples}))[:500]
            e = aggregate_expression(ok) if ok else None
            va = aggregate_va(ok) if ok else None
            au = aggregate_aus(ok) if ok else None
            rows.append({
                "face_id": face.face_id,
                "pred_expression": e.label if e else None,
                "pred_expression_confidence": e.confidence if e else None,
                "pred_expression_probs": e.probs if e else None,
                "pred_valence": va.valence if va else None, "pred_arousal": va.arousal if va else None,
                "pred_aus": au.present if au else None,
                "n_samples_ok": len(ok), "cost_usd": float(sum(s.cost_usd for s in samples)),
                "error": error,
            })
        if progress:
            progress(min(start + batch_size, len(faces)), len(faces))
    schema = {"face_id": pl.String, "pred_expression": pl.String, "pred_expression_confidence": pl.Float64,
              "pred_expression_probs": pl.List(pl.Float64), "pred_valence": pl.Float64,
              "pred_arousal": pl.Float64, "pred_aus": pl.List(pl.Int32), "n_samples_ok": pl.Int32,
              "cost_usd": pl.Float64, "error": pl.String}
    return pl.DataFrame(rows, schema=schema)


def item_predictions(feab: pl.DataFrame, predictions: pl.DataFrame, run_id: str, model: str) -> pl.DataFrame:
    """FEAB items joined with their face's prediction (EVALUATION_PREDICTIONS columns)."""
    joined = feab.drop("image_png", strict=False).join(predictions, on="face_id", how="left")
    joined = joined.with_columns(
        pl.when(pl.col("task") == "expression")
          .then(pl.col("pred_expression") == pl.col("gold_expression")).otherwise(None).alias("correct"),
        pl.lit(run_id).alias("run_id"), pl.lit(model).alias("model"))
    table = conform(joined.to_arrow(), EVALUATION_PREDICTIONS)
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


# ---- metrics ----------------------------------------------------------------------------------

def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


#: Subsets of FEAB gold, in report order; only ``human`` gold yields accuracy (module docstring).
SUBSETS: tuple[str, ...] = ("human", "generated", "self_agreement")
#: Metrics that presuppose the gold is the truth: not computed against generated gold.
_TRUTH_ONLY = frozenset({"ece", "brier", "multiclass_brier"})


def label_generators(mc_samples: pl.DataFrame) -> dict[str, set[str]]:
    """face_id -> the ``backend/model`` identities whose samples produced its generated labels."""
    if mc_samples.height == 0 or not {"face_id", "backend", "model"} <= set(mc_samples.columns):
        return {}
    pairs = mc_samples.select("face_id", (pl.col("backend") + "/" + pl.col("model")).alias("who")).unique()
    out: dict[str, set[str]] = {}
    for fid, who in pairs.iter_rows():
        if who is not None:
            out.setdefault(fid, set()).add(who)
    return out


def read_label_generators(lake: Any, face_ids: Sequence[str] | None = None) -> dict[str, set[str]]:
    """:func:`label_generators` from the lake's ``mc_samples`` (empty when it has none)."""
    if not lake.exists("mc_samples"):
        return {}
    table = lake.dataset("mc_samples").to_table(columns=["face_id", "backend", "model"])
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if face_ids is not None:
        frame = frame.filter(pl.col("face_id").is_in(list(face_ids)))
    return label_generators(frame)


def gold_subsets(items: pl.DataFrame, annotator_id: str,
                 generators: Mapping[str, set[str]] | None = None) -> dict[str, pl.DataFrame]:
    """Split item predictions by the kind of gold (see :data:`SUBSETS`).

    ``annotator_id`` is the evaluated annotator's ``backend/model``; an item with generated gold
    is ``self_agreement`` when that identity is among its face's ``generators``, else
    ``generated`` (also when nobody recorded who generated it).
    """
    gens = generators or {}
    flagged = pl.col("gold_flagged").fill_null(False)
    own = {fid for fid, who in gens.items() if annotator_id in who}
    is_self = flagged & pl.col("face_id").is_in(list(own))
    return {"human": items.filter(~flagged), "generated": items.filter(flagged & ~is_self),
            "self_agreement": items.filter(is_self)}


def task_metrics(items: pl.DataFrame, gold: str = "human") -> list[dict[str, Any]]:
    """Metric rows (task, metric, value, n_items, detail) for one subset of item predictions.

    ``gold`` other than ``human`` scores agreement: the expression match share is named
    ``agreement`` instead of ``accuracy`` and the calibration metrics are left out.
    """
    out: list[dict[str, Any]] = []
    agreement = gold != "human"

    def add(task: str, metric: str, value: float | None, n: int, detail: Any = None) -> None:
        if agreement and metric in _TRUTH_ONLY:
            return
        if agreement and metric == "accuracy":
            metric = "agreement"
        out.append({"task": task, "metric": metric, "value": _nan_to_none(value) if value is not None else None,
                    "n_items": n, "detail": json.dumps(detail) if detail is not None else None})

    ex = items.filter(pl.col("task") == "expression")
    if ex.height:
        g, p = ex["gold_expression"].to_list(), ex["pred_expression"].to_list()
        covered = ex.filter(pl.col("pred_expression").is_not_null())
        conf = covered["pred_expression_confidence"].to_list()
        correct = covered["correct"].to_list()
        add("expression", "coverage", covered.height / ex.height, ex.height)
        add("expression", "accuracy", M.accuracy(g, p), ex.height)
        add("expression", "macro_f1", M.macro_f1(g, p, EXPRESSIONS), ex.height,
            {k: round(v, 6) for k, v in M.per_class_f1(g, p, EXPRESSIONS).items()})
        add("expression", "ece", M.ece(conf, correct) if covered.height else float("nan"), ex.height)
        add("expression", "brier", M.brier(conf, correct) if covered.height else float("nan"), ex.height)
        add("expression", "multiclass_brier",
            M.multiclass_brier(covered["pred_expression_probs"].to_list(),
                               covered["gold_expression"].to_list(), EXPRESSIONS), ex.height)
        add("expression", "confusion_matrix", None, ex.height,
            {"labels": list(EXPRESSIONS), "matrix": M.confusion_matrix(g, p, EXPRESSIONS).tolist()})
    va = items.filter(pl.col("task") == "va")
    if va.height:
        covered = va.filter(pl.col("pred_valence").is_not_null()).height
        add("va", "coverage", covered / va.height, va.height)
        for axis in ("valence", "arousal"):
            g, p = va[f"gold_{axis}"].to_list(), va[f"pred_{axis}"].to_list()
            add("va", f"rmse_{axis}", M.rmse(g, p), va.height)
            add("va", f"ccc_{axis}", M.ccc(g, p), va.height)
            add("va", f"sign_{axis}", M.sign_agreement(g, p), va.height)
    au = items.filter(pl.col("task") == "aus")
    if au.height:
        g, p = au["gold_aus"].to_list(), au["pred_aus"].to_list()
        add("aus", "coverage", au.filter(pl.col("pred_aus").is_not_null()).height / au.height, au.height)
        per = M.per_au_f1(g, p, AU_CATALOGUE)
        add("aus", "mean_f1", M.mean_au_f1(g, p, AU_CATALOGUE), au.height,
            {f"AU{k}": round(v, 6) for k, v in per.items()})
        for k, v in per.items():
            add("aus", f"f1_au{k}", v, au.height)
    return out


def subset_table(result: "EvaluationResult") -> list[tuple[str, float | None, float | None, float | None]]:
    """Rows ``(metric, human gold, generated gold, own labels)``: accuracy against human gold
    only; the other two columns hold agreement (the ``accuracy`` row shows ``agreement``)."""
    human, gen, own = (result.summary(s) for s in SUBSETS)
    rows = []
    for key in human:
        other = key.replace(".accuracy", ".agreement")
        rows.append((key if other == key else f"{key} | agreement", human[key], gen.get(other), own.get(other)))
    return rows


def fingerprint(feab: pl.DataFrame) -> str:
    """Identity of the benchmark content scored (sorted item ids)."""
    ids = sorted(feab["item_id"].to_list())
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


# ---- plots ------------------------------------------------------------------------------------

def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (about 500 px wide), the figure closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")   # ~500 px wide: readable in the UI
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def confusion_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> bytes:
    """Row-normalised confusion matrix with counts, as PNG bytes."""
    import matplotlib

    matrix_ = np.asarray(matrix, dtype=float)
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = matrix_.sum(axis=1, keepdims=True)
    norm = np.divide(matrix_, rows, out=np.zeros_like(matrix_), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix_[i, j]:
                ax.text(j, i, int(matrix_[i, j]), ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of gold row")
    ax.set_title(title or "expression confusion")
    return figure_png(fig)


def va_scatter_png(items: pl.DataFrame, title: str = "") -> bytes:
    """Gold vs predicted valence and arousal (VA items with a prediction), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    va = items.filter((pl.col("task") == "va") & pl.col("pred_valence").is_not_null())
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, axis in zip(axes, ("valence", "arousal")):
        g, p = va[f"gold_{axis}"].to_numpy(), va[f"pred_{axis}"].to_numpy()
        flagged = va["gold_flagged"].to_numpy() if va.height else np.array([], bool)
        ax.plot([-1, 1], [-1, 1], color="grey", lw=1, ls="--")
        if (~flagged).any():
            ax.scatter(g[~flagged], p[~flagged], s=14, alpha=0.7, label="human gold")
        if flagged.any():
            ax.scatter(g[flagged], p[flagged], s=14, alpha=0.7, marker="x", label="verified gold (flagged)")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel(f"gold {axis}")
        ax.set_ylabel(f"predicted {axis}")
        ccc = M.ccc(g.tolist(), p.tolist()) if len(g) else float("nan")
        ax.set_title(f"{axis}: CCC {ccc:.3f}, n={len(g)}")
        if len(g):
            ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(title or "valence–arousal")
    fig.tight_layout()
    return figure_png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown with the PNG inlined as a data URI (Dagster renders it in asset metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


# ---- the run ----------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    run_id: str
    model: str
    backend: str
    metrics: pl.DataFrame                 # EVALUATIONS rows
    items: pl.DataFrame                   # EVALUATION_PREDICTIONS rows
    plots: dict[str, bytes] = field(default_factory=dict)

    def value(self, task: str, metric: str, subset: str = "human") -> float | None:
        row = self.metrics.filter((pl.col("task") == task) & (pl.col("metric") == metric)
                                  & (pl.col("subset") == subset))
        return row["value"][0] if row.height else None

    def summary(self, subset: str = "human") -> dict[str, float | None]:
        """Comparison metrics of one subset; against generated gold, accuracy reads agreement."""
        keys = [(t, "agreement" if subset != "human" and m == "accuracy" else m) for t, m in COMPARISON_METRICS]
        return {f"{t}.{m}": self.value(t, m, subset) for t, m in keys if subset == "human" or m not in _TRUTH_ONLY}

    @property
    def partition(self) -> dict[str, str]:
        return {"model": model_slug(self.model), "run": self.run_id}


def model_slug(model: str) -> str:
    """A model name safe as a hive partition value and file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def evaluate(annotator: Annotator, feab: pl.DataFrame, *, model: str | None = None,
             run_id: str | None = None, knowledge: Knowledge | None = None,
             prompt: PromptSpec | None = None, n_samples: int = 1, batch_size: int = 16,
             plots: bool = True, progress: Callable[[int, int], None] | None = None,
             generators: Mapping[str, set[str]] | None = None) -> EvaluationResult:
    """Predict every FEAB face with ``annotator`` and score the three tasks (+ confidence).

    ``generators`` (:func:`label_generators`) says who generated each face's non-human gold, so
    that an annotator's agreement with its own labels is reported as ``self_agreement``.
    """
    if feab.height == 0:
        raise ValueError("FEAB is empty: materialize the feab asset first")
    model = model or f"{annotator.backend}/{annotator.model}"
    run_id = run_id or new_run_id()
    preds = predict(annotator, feab, knowledge=knowledge, prompt=prompt, n_samples=n_samples,
                    batch_size=batch_size, progress=progress)
    items = item_predictions(feab, preds, run_id, model)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    fp = fingerprint(feab)
    rows = []
    subsets = gold_subsets(items, f"{annotator.backend}/{annotator.model}", generators)
    for subset, frame in subsets.items():
        for r in task_metrics(frame, gold=subset):
            rows.append({"run_id": run_id, "model": model, "backend": annotator.backend,
                         "evaluated_at": stamp, "feab_fingerprint": fp, "subset": subset, **r})
    table = pl.from_arrow(conform(pa.Table.from_pylist(rows) if rows else EVALUATIONS.empty_table(),
                                  EVALUATIONS))
    assert isinstance(table, pl.DataFrame)
    result = EvaluationResult(run_id, model, annotator.backend, table, items)
    if plots:
        cm = table.filter((pl.col("metric") == "confusion_matrix") & (pl.col("subset") == "human"))
        if cm.height:
            d = json.loads(cm["detail"][0])
            result.plots["confusion_matrix"] = confusion_png(d["matrix"], d["labels"], "expression: gold vs predicted")
        if items.filter(pl.col("task") == "va").height:
            result.plots["va_scatter"] = va_scatter_png(items, "valence / arousal: gold vs predicted")
    return result


def store(lake: Any, result: EvaluationResult, feab_version: int | None = None,
          versions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write metrics and item predictions to the lake (``evaluations``,
    ``evaluation_predictions``), partitioned by ``model`` and ``run``; re-running a run id
    replaces it. ``feab_version`` (the FEAB table version scored) is stored with the metrics
    and pinned, so a vacuum never removes the benchmark a stored score refers to; ``versions``
    (knowledge, prompt, annotator) are stored beside it."""
    part = result.partition  # the hive key ``model`` holds the slug; the full name is ``model_name``
    metrics = result.metrics.rename({"model": "model_name"}).with_columns(
        pl.lit(feab_version, dtype=pl.Int64).alias("feab_version"),
        *(pl.lit(str(v)).alias(f"{k}_version") for k, v in (versions or {}).items()))
    if feab_version is not None:
        lake.pin("feab", feab_version, f"evaluation:{result.run_id}")
    return {
        "evaluations": lake.write_partition("evaluations", part, metrics),
        "evaluation_predictions": lake.write_partition("evaluation_predictions", part,
                                                       result.items.rename({"model": "model_name"})),
    }


def read_evaluations(lake: Any) -> pl.DataFrame:
    """Every stored evaluation row, with ``model`` (full name) and ``run_id`` restored."""
    if not lake.exists("evaluations"):
        return pl.from_arrow(EVALUATIONS.empty_table())  # type: ignore[return-value]
    df = lake.read_table("evaluations")
    return df.drop("model", "run").rename({"model_name": "model"})


def comparison_table(evaluations: pl.DataFrame, subset: str = "human", latest_only: bool = True) -> pl.DataFrame:
    """One row per model (its latest run unless ``latest_only=False``), key metrics as columns
    (human gold by default; runs stored before subsets were split have no ``human`` rows for
    generated-only benchmarks and simply do not appear)."""
    ev = evaluations.filter((pl.col("subset") == subset) & pl.col("value").is_not_null())
    if ev.height == 0:
        return pl.DataFrame({"model": [], "run_id": []}, schema={"model": pl.String, "run_id": pl.String})
    runs = ev.select("model", "run_id", "evaluated_at").unique()
    if latest_only:
        runs = runs.sort("evaluated_at", "run_id").group_by("model").last()
    keep = [f"{t}.{'agreement' if subset != 'human' and m == 'accuracy' else m}" for t, m in COMPARISON_METRICS]
    wide = (ev.join(runs.select("model", "run_id"), on=["model", "run_id"])
              .with_columns((pl.col("task") + "." + pl.col("metric")).alias("key"))
              .filter(pl.col("key").is_in(keep))
              .pivot(on="key", index=["model", "run_id", "evaluated_at"], values="value",
                     aggregate_function="first"))
    cols = [c for c in keep if c in wide.columns]
    return wide.select("model", "run_id", "evaluated_at", *cols).sort("model")


def markdown_table(frame: pl.DataFrame, digits: int = 3) -> str:
    """A small Markdown table (for materialization metadata and the CLI)."""
    if frame.height == 0:
        return "_no rows_"
    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)
    head = "| " + " | ".join(frame.columns) + " |"
    sep = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([head, sep, *body])


@dataclass
class EvaluationRun:
    """One scored evaluation and what it was scored with."""

    result: EvaluationResult
    feab_version: int | None
    versions: dict[str, str]
    commits: dict[str, Any]
    notes: list[str]


def run_evaluation(lake: Any, make_annotator: Callable[[Knowledge], Annotator], *,
                   feab_version: int | None = None, source: str | None = None, batch: str | None = None,
                   limit: int | None = None, model: str | None = None, run_id: str | None = None,
                   n_samples: int = 1, batch_size: int = 16, store_run: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> EvaluationRun:
    """The one evaluation path of the CLI (``seke evaluate``) and the ``evaluation`` asset.

    Reads FEAB at ``feab_version`` (default: the latest), prompts with the lake's *current*
    knowledge (the literature tables only when the lake has none, said in ``notes``), scores,
    and stores the run with the FEAB version (pinned) and the knowledge, prompt and annotator
    versions it used."""
    from seke.knowledge import knowledge_v1, read_current_knowledge
    from seke.prompts import ANNOTATE_VERSION

    notes: list[str] = []
    if not lake.exists("feab"):
        raise ValueError(f"no FEAB table in {lake.uri}: materialize the feab asset first")
    feab_version = lake.version("feab") if feab_version is None else feab_version
    feab = lake.read_table("feab", version=feab_version)
    if source:
        feab = feab.filter(pl.col("source") == source)
    if batch:
        feab = feab.filter(pl.col("batch") == batch)
    if limit:
        feab = feab.filter(pl.col("face_id").is_in(feab["face_id"].unique(maintain_order=True).head(limit).implode()))
    try:
        knowledge = read_current_knowledge(lake)
    except RuntimeError:
        knowledge = knowledge_v1()
        notes.append("no knowledge in the lake: prompts use the v1 literature tables")
    annotator = make_annotator(knowledge)
    result = evaluate(annotator, feab, model=model, run_id=run_id, knowledge=knowledge, n_samples=n_samples,
                      batch_size=batch_size, progress=progress,
                      generators=read_label_generators(lake, feab["face_id"].unique().to_list()))
    versions = {"knowledge": knowledge.version, "prompt": ANNOTATE_VERSION,
                "annotator": f"{annotator.backend}/{annotator.model}"}
    commits = store(lake, result, feab_version=feab_version, versions=versions) if store_run else {}
    return EvaluationRun(result, feab_version, versions, commits, notes)
