"""Training assets: a multi-task model trained on FEID, its human-labels-only ablation, and the
comparison of the two on FEAB and fer2013 validation.

Thin wiring over :mod:`seke.train` (the science). Each training asset reads every FEID partition
from the lake, trains on the :class:`~resources.gpu.GPUResource` device, evaluates on FEAB and
on the fer2013 validation split (skipped with a note when absent), stores the checkpoint under
``<lake>/models/<run>/data=<FEID version>/config=<recipe>/`` and reports device facts and
metrics. The op tags ask Kubernetes for a GPU node (one GPU per step pod); on a single-GPU host,
``dagster instance concurrency set gpu 1`` makes the ``gpu`` pool run one training at a time.

Register in ``pipelines/definitions.py``::

    from assets.training import training_assets
    from resources.gpu import GPUResource
    Definitions(assets=[..., *training_assets], resources={..., "gpu": GPUResource()})

(the ``lake`` resource key is the platform's ``LakeResource``).
"""


import json
from typing import Any

from dagster import (AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult,
                     MetadataValue, ResourceParam, asset)
from pydantic import Field

from assets.common import OWNERS, tags
from resources.data import DevDataResource
from resources.deployment import gpu_op_tags
from resources.gpu import GPUResource
from seke.train.arrays import data_version, from_feid
from seke.train.config import TrainConfig, recipe_differences, resolve_recipe
from seke.train.report import ablation_table

MULTITASK = "feid-multitask"
ABLATION = f"{MULTITASK}-human-expression-only"


class TrainingRunConfig(Config):
    """Run-time knobs of a training asset (the recipe's other fields keep their defaults)."""

    recipe: str = Field(default="auto", description="auto (full on a GPU, compact on CPU) | full | compact | tiny")
    epochs: int = Field(default=0, description="epochs, cut to fit time_limit_s (0 = the recipe's)")
    batch_size: int = Field(default=0, description="0 = the recipe's")
    lr: float = Field(default=0.0, description="peak learning rate (0 = the recipe's)")
    time_limit_s: float = Field(default=1800.0, description="training time budget in seconds")
    seed: int = 0
    max_faces: int = Field(default=0, description="train on at most N faces (0 = all)")
    tiny: bool = Field(default=False, description="shorthand for recipe='tiny' (the unit-test network)")
    tta: bool = True
    fer_validation_dir: str = Field(default="", description="fer2013 folder; '' = the dev_data resource's fer2013")
    ckplus_dir: str = Field(default="", description="CK+ folder (human FACS AUs); '' = the dev_data resource's ckplus")
    feid_version: int = Field(default=-1, description="FEID table version to train on (-1: the latest)")


def recipe(run: TrainingRunConfig, ablation: bool, device: str = "cuda") -> TrainConfig:
    """The run config as a recipe (:func:`seke.train.config.resolve_recipe`)."""
    try:
        return resolve_recipe("tiny" if run.tiny else run.recipe, device, run_name=MULTITASK, ablation=ablation,
                              epochs=run.epochs, batch_size=run.batch_size, lr=run.lr,
                              time_limit_s=run.time_limit_s, seed=run.seed, tta=run.tta)
    except ValueError as exc:
        raise Failure(description=str(exc)) from exc


def _train(context: AssetExecutionContext, run: TrainingRunConfig, lake_res: Any, gpu: GPUResource,
           dev_data: DevDataResource, ablation: bool) -> MaterializeResult:
    import numpy as np

    from seke.train.evaluate import feab_arrays
    from seke.train.run import headline, load_ckplus, load_fer_validation, train_and_evaluate

    lake = lake_res.lake()
    if not lake.exists("feid"):
        raise Failure(description="no FEID table in the lake: materialize `feid` first",
                      metadata={"lake": MetadataValue.path(lake.display_path("feid"))})
    device = gpu.select(context.log)
    cfg = recipe(run, ablation, device)
    context.log.info(f"recipe {cfg.name} ({cfg.digest()}): widths {cfg.widths}, blocks {cfg.blocks}, "
                     f"{cfg.image_size}px, {cfg.epochs} epochs"
                     + (f" or {cfg.time_limit_s:.0f}s, whichever ends first," if cfg.time_limit_s > 0 else ",")
                     + f" on {device}")
    feid_version = lake.version("feid") if run.feid_version < 0 else run.feid_version
    try:
        partitions = lake.partition_names("feid", feid_version)
    except Exception as exc:  # a version that was never written or was vacuumed away
        raise Failure(description=f"FEID version {feid_version} cannot be read: {exc}") from exc
    context.log.info(f"training on FEID {lake.table_uri('feid')} version {feid_version}")
    arrays, errors = from_feid(lake.dataset("feid", feid_version).to_table(), cfg.image_size,
                               missing_confidence=cfg.missing_confidence)
    for err in errors[:20]:
        context.log.warning(f"FEID face left out of training: {err['face_id']}: {err['reason']}")
    if run.max_faces and len(arrays) > run.max_faces:
        arrays = arrays.subset(np.sort(np.random.default_rng(run.seed).choice(len(arrays), run.max_faces, replace=False)))
    version = data_version(partitions, arrays.face_id)
    feab = None
    feab_version = lake.version("feab")
    if feab_version is not None:
        feab, feab_errors = feab_arrays(lake.dataset("feab", feab_version).to_table(), cfg.image_size)
        if feab_errors:
            context.log.warning(f"{len(feab_errors)} FEAB faces unreadable, e.g. {feab_errors[0]}")
    else:
        context.log.info("evaluation on FEAB: skipped (no feab table in the lake)")
    ckplus = load_ckplus(cfg.image_size, run.ckplus_dir or dev_data.set_dir("ckplus"))
    if ckplus is None:
        context.log.info("evaluation on CK+ (human FACS AUs): skipped (../shared/data/ckplus absent)")
    fer_val = load_fer_validation(cfg.image_size, run.fer_validation_dir or dev_data.set_dir("fer2013"))
    if fer_val is None:
        context.log.info("evaluation on fer2013 validation: skipped (../shared/data/fer2013 absent)")
    fs, root = lake.filesystem()
    summary = train_and_evaluate(arrays, cfg, device=device, log=context.log.info,
                                 evals={"feab": feab, "fer2013_validation": fer_val, "ckplus": ckplus},
                                 data_version=version, partitions=partitions,
                                 checkpoint_root=root, fs=fs)
    model = summary.pop("_model", None)
    lake.pin("feid", feid_version, f"checkpoint:{summary['checkpoint']}")
    if feab_version is not None:
        lake.pin("feab", feab_version, f"checkpoint:{summary['checkpoint']}")
    evaluator_meta = _evaluate_on_feab(context, lake, model, cfg, device) if feab is not None else {}
    acc = headline(summary)
    print(f"RESULT fer_val_acc={acc:.4f} run={cfg.name} data_version={version} device={device}")
    ev = summary["evaluation"]
    feab_ev = ev.get("feab", {})
    meta: dict[str, Any] = {
        "checkpoint": MetadataValue.path(f"s3://{summary['checkpoint']}" if lake.is_s3 else summary["checkpoint"]),
        "data_version": MetadataValue.text(version),
        "feid_partitions": MetadataValue.json(partitions),
        "feid_table_uri": MetadataValue.path(lake.table_uri("feid")),
        "feid_version": MetadataValue.int(feid_version),
        "feab_version": MetadataValue.int(feab_version) if feab_version is not None else MetadataValue.text("none"),
        "config_digest": MetadataValue.text(cfg.digest()),
        "recipe": MetadataValue.json(cfg.to_dict()),
        "train_faces": MetadataValue.int(summary["n_train"]),
        "label_counts": MetadataValue.json(summary["label_counts"]),
        "feid_faces_left_out": MetadataValue.int(len(errors)),
        "epochs_run": MetadataValue.int(summary["epochs_run"]),
        "train_seconds": MetadataValue.float(summary["train_seconds"]),
        "images_per_s": MetadataValue.float(summary["images_per_s"]),
        "fer_val_acc": MetadataValue.float(acc) if acc == acc else MetadataValue.text("skipped: data absent"),
        "feab_expression_accuracy": _metric(feab_ev, "expression", "accuracy"),
        "feab_expression_macro_f1": _metric(feab_ev, "expression", "macro_f1"),
        "feab_va_ccc_valence": _metric(feab_ev, "va", "ccc_valence"),
        "feab_au_mean_f1": _metric(feab_ev, "aus", "mean_f1"),
        "ckplus_expression_accuracy": _metric(ev.get("ckplus", {}), "expression", "accuracy"),
        "ckplus_au_mean_f1": _metric(ev.get("ckplus", {}), "aus", "mean_f1"),
        "evaluation": MetadataValue.json(json.loads(json.dumps(ev, default=str))),
        "history": MetadataValue.md(_history_md(summary["history"])),
        **evaluator_meta,
        **gpu.metadata(device),
    }
    return MaterializeResult(metadata=meta)


def _evaluate_on_feab(context: AssetExecutionContext, lake: Any, model: Any, cfg: TrainConfig,
                      device: str) -> dict[str, MetadataValue]:
    """Score the fresh checkpoint with the platform's FEAB evaluator (the same code that scores
    the offline annotator and VLLMs), store it in ``evaluations``, and return its metadata."""
    from seke.evaluate import comparison_table, evaluate, markdown_table, png_markdown, read_evaluations, store
    from seke.train.annotator import model_annotator

    label = f"{cfg.name}@{cfg.digest()}"
    result = evaluate(model_annotator(model, cfg, device, name=label), lake.read_table("feab"),
                      model=label, batch_size=256)
    store(lake, result)
    context.log.info(f"FEAB evaluator: run {result.run_id} stored as model {label}")
    meta = {
        "evaluator_run_id": MetadataValue.text(result.run_id),
        "evaluator_metrics": MetadataValue.json({k: v for k, v in result.summary().items()
                                                 if v is not None and v == v}),
        "evaluator_comparison": MetadataValue.md(markdown_table(comparison_table(read_evaluations(lake)))),
    }
    if "confusion_matrix" in result.plots:
        meta["feab_confusion_matrix"] = MetadataValue.md(png_markdown(result.plots["confusion_matrix"], "confusion"))
    return meta


def _metric(block: dict, head: str, key: str) -> MetadataValue:
    if "skipped" in block:
        return MetadataValue.text(f"skipped: {block['skipped']}")
    value = block.get(head, {}).get(key)
    if value is None or value != value:
        return MetadataValue.text("n/a (no such labels)")
    return MetadataValue.float(float(value))


def _history_md(history: list[dict]) -> str:
    if not history:
        return "_no epochs_"
    keys = list(history[0].keys()) + [k for k in ("val_acc",) if k not in history[0] and any(k in h for h in history)]
    return "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n" + "\n".join(
        "| " + " | ".join(str(h.get(k, "")) for k in keys) + " |" for h in history)


_GPU_ASSET = dict(deps=[AssetKey("feid")], group_name="training", kinds={"pytorch"},
                  op_tags=gpu_op_tags(), pool="gpu", tags=tags("training"), owners=OWNERS)


@asset(**_GPU_ASSET)
def trained_model(context: AssetExecutionContext, config: TrainingRunConfig, lake: ResourceParam[Any],
                  gpu: GPUResource, dev_data: DevDataResource) -> MaterializeResult:
    """Multi-task CNN (expression, valence–arousal, AUs) trained on every FEID partition with
    confidence-weighted, masked losses; checkpoint in the lake under models/, evaluated on FEAB,
    fer2013 validation and CK+.

    **Takes long:** up to `time_limit_s` (run config, default 1800 s = 30 minutes) of training
    plus evaluation. On a CPU the `auto` recipe is the compact net (450–800 images/s on 2
    cores, the upper figure with AMX bf16, `bench/train_throughput.py --recipe compact`: one
    FER2013-sized epoch ≈ 35–65 s); on a
    GPU the full net. Size a run with `epochs`,
    `time_limit_s` and `max_faces`; `recipe: tiny` finishes in seconds (a smoke test)."""
    return _train(context, config, lake, gpu, dev_data, ablation=False)


@asset(**_GPU_ASSET)
def trained_model_human_only(context: AssetExecutionContext, config: TrainingRunConfig,
                             lake: ResourceParam[Any], gpu: GPUResource,
                             dev_data: DevDataResource) -> MaterializeResult:
    """Ablation: the same network and recipe trained on human expression labels only (no
    generated VA/AU labels), to measure what SEKE's generated labels add. Takes as long as
    `trained_model` (same recipe and time budget)."""
    return _train(context, config, lake, gpu, dev_data, ablation=True)


@asset(deps=[trained_model, trained_model_human_only], group_name="training", owners=OWNERS, tags=tags("training"))
def training_ablation_report(context: AssetExecutionContext, lake: ResourceParam[Any]) -> MaterializeResult:
    """Side-by-side metrics of the multi-task model and its human-labels-only ablation, read
    from their latest checkpoints in the lake."""
    from seke.train.checkpoint import read_latest

    store = lake.lake()
    fs, root = store.filesystem()
    runs, recipes = {}, {}
    for name in (MULTITASK, ABLATION):
        latest = read_latest(root, name, fs=fs)
        if latest is None:
            raise Failure(description=f"no checkpoint for {name}: materialize its training asset first")
        with fs.open_input_stream(f"{latest['path']}/metrics.json") as fh:
            runs[name] = json.loads(fh.read())
        with fs.open_input_stream(f"{latest['path']}/config.json") as fh:
            recipes[name] = json.loads(fh.read())
    differing = recipe_differences(recipes[MULTITASK], recipes[ABLATION])
    if differing:
        context.log.warning(f"the two checkpoints differ beyond the ablation in {sorted(differing)}: "
                            "retrain both with the same run config before reading the deltas")
    table = ablation_table(runs[MULTITASK]["evaluation"], runs[ABLATION]["evaluation"])
    context.log.info("\n" + table)
    return MaterializeResult(metadata={
        "comparison": MetadataValue.md(table),
        "checkpoints": MetadataValue.json({n: r.get("checkpoint") for n, r in runs.items()}),
        "data_versions": MetadataValue.json({n: r.get("data_version") for n, r in runs.items()}),
        "comparable": MetadataValue.bool(not differing),
        "recipe_differences": MetadataValue.json(differing),
    })


training_assets = [trained_model, trained_model_human_only, training_ablation_report]
