"""The one place that reads the platform's environment variables.

Every variable the platform reads is listed in :data:`SETTINGS` (name, default, meaning); the
README's configuration table is checked against it by a test, and no other module outside
``resources/`` (and the ``seke`` CLI entry point) reads the environment.

:func:`default_resources` builds the code location's resources from it. A variable that is set
is passed as a Dagster :class:`~dagster.EnvVar` (``EnvVar.int`` for integers), so the UI's
resource page says which value came from which variable; one that is unset leaves the
resource's own default. Float and boolean variables are parsed here (Dagster's ``EnvVar`` is
string/int only) and passed as values. ``0`` is a value, not "unset"; an empty string counts
as unset.
"""

import os
from dataclasses import dataclass
from typing import Any, Callable

from dagster import EnvVar

from seke.manifest import parse_subject_patterns


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("SEKE_LAKE_URI", "./lake", "lake root: a local path or `s3://bucket/prefix` (Delta tables)"),
    Setting("SEKE_S3_ENDPOINT", "—", "S3 endpoint override (MinIO, SeaweedFS, …), shared by the lake and the landing zone"),
    Setting("AWS_REGION", "us-east-1", "S3 region (lake and landing zone)"),
    Setting("AWS_ACCESS_KEY_ID", "—", "S3 access key (read by boto3/pyarrow/delta-rs; never stored)"),
    Setting("AWS_SECRET_ACCESS_KEY", "—", "S3 secret key (read by boto3/pyarrow/delta-rs; never stored)"),
    Setting("SEKE_LANDING_URI", "—", "landing zone on S3 (`s3://…`); wins over `SEKE_LANDING_DIR`"),
    Setting("SEKE_LANDING_DIR", "./landing", "local landing zone: `<source>/<batch>/` folders, one dynamic partition `<source>__<batch>` each"),
    Setting("SEKE_LANDING_ALLOWED_ROOTS", "—", "extra local folders (`os.pathsep`-separated) that symlinks inside a batch may point into; links resolving elsewhere are quarantined"),
    Setting("SEKE_SUBJECT_PATTERNS", "—", "per source, a regular expression that reads the subject from a file name where the manifest has no `subject_id`: `source=regex` entries separated by `;`, the subject in `(?P<subject>…)` or the first group, e.g. `wild=(?P<subject>.+)_\\d+\\.\\w+` for LFW-style `Name_0001.jpg`; splits then keep a person on one side and certification counts persons"),
    Setting("SEKE_REVIEW_DIR", "./review", "Label Studio review queue (`queue/`) and reviewed exports (`exports/`)"),
    Setting("SEKE_REVIEW_QA_RATE", "0.02", "share of each batch's *accepted* labels sent to review blind as a seeded QA sample; reviewers' answers give the live accepted-label error estimate (`review_labels` metadata, lake table `review_quality`)"),
    Setting("SEKE_DUCKDB_PATH", "./lake/warehouse.duckdb", "the analysts' DuckDB file"),
    Setting("SEKE_EXECUTOR", "multiprocess", "`k8s` runs each step as a Kubernetes job (dagster-k8s, the `k8s` extra)"),
    Setting("SEKE_ANNOTATOR", "offline", "`offline`, `vllm` or `pool`"),
    Setting("SEKE_ANNOTATOR_POOL", "—", "`pool`: JSON list of members, e.g. `[{\"name\": \"offline\", \"kind\": \"offline\"}, {\"name\": \"gpt4o\", \"model\": \"gpt-4o\", \"price_input_per_1m\": 2.5, \"price_output_per_1m\": 10, \"rpm\": 500}]` (fields: PoolMember + VLLM endpoint fields)"),
    Setting("SEKE_POOL_STRATEGY", "cascade", "`cascade` (cheapest first, unresolved faces escalate) or `jury` (another model verifies)"),
    Setting("SEKE_POOL_CROSS_CHECK", "1", "`pool`: a face a cheaper cascade stage resolved is re-checked by another member (one verification call) before it is final, and escalates if that member disagrees; in a jury every face is verified by another model. `0` turns it off"),
    Setting("SEKE_POOL_VERIFIER", "—", "pool member that verifies every face (unset: cascade self-verifies, jury picks another model)"),
    Setting("SEKE_SEED", "0", "seed of the offline annotator's test-time augmentation"),
    Setting("SEKE_EXPRESSION_CHECKPOINT", "—", "offline annotator: a checkpoint folder (local or `s3://`) from the training assets, or several comma-separated (an ensemble: their expression probabilities averaged), used as a second expression model (pooled into the expression probabilities, a voter in verification); needs `make .venv/.train-extra`"),
    Setting("SEKE_EXPRESSION_CHECKPOINT_WEIGHTS", "0.4", "pooling weight of that checkpoint per source, e.g. `ckplus=0,*=0.4` (a bare number: every source; 0: not used for that source's faces, neither pooled nor voting); choose it with `bench/second_model_weight.py`"),
    Setting("SEKE_KNOWLEDGE_VERSION", "v2", "`v1` literature tables, `v2` + P(AU | expression) estimated from CK+"),
    Setting("SEKE_CACHE_DIR", "~/.cache/seke", "where fetched model files, sample photos and downloaded S3 batches live"),
    Setting("SEKE_SHARED_DATA", "../shared/data", "labelled dev faces (manifest format) for the training and annotator-quality assets"),
    Setting("SEKE_VLLM_BASE_URL", "https://api.openai.com/v1", "OpenAI-compatible chat-completions base URL"),
    Setting("SEKE_VLLM_MODEL", "gpt-4o", "model name"),
    Setting("SEKE_VLLM_API_KEY_ENV", "OPENAI_API_KEY", "name of the variable holding the API key (the key itself is never a setting)"),
    Setting("OPENAI_API_KEY", "—", "the VLLM API key (read when the annotator is built; never logged or stored)"),
    Setting("SEKE_VLLM_MAX_CONCURRENCY", "8", "in-flight requests per step"),
    Setting("SEKE_VLLM_TIMEOUT_S", "60", "per-request timeout in seconds"),
    Setting("SEKE_VLLM_MAX_RETRIES", "2", "SDK retries on 408/409/429/5xx and timeouts (0 = none)"),
    Setting("SEKE_VLLM_MAX_CALLS", "—", "per-run cap on model calls"),
    Setting("SEKE_VLLM_MAX_USD", "—", "per-run cap on spend in USD"),
    Setting("SEKE_VLLM_PRICE_INPUT_PER_1M", "0", "USD per 1M prompt tokens"),
    Setting("SEKE_VLLM_PRICE_OUTPUT_PER_1M", "0", "USD per 1M completion tokens"),
    Setting("SEKE_VLLM_TEMPERATURE", "0.7", "sampling temperature of the Monte Carlo samples (0 is honoured)"),
    Setting("SEKE_VLLM_TOP_P", "—", "nucleus sampling"),
    Setting("SEKE_VLLM_SEED", "—", "base seed; sample i uses seed + i"),
    Setting("SEKE_VLLM_MAX_TOKENS", "1200", "completion token cap"),
    Setting("SEKE_VLLM_RPM", "—", "requests per minute of the endpoint, honoured across all concurrent requests of a step"),
    Setting("SEKE_VLLM_TPM", "—", "tokens per minute of the endpoint (prompt + n·max_tokens per request)"),
    Setting("SEKE_VLLM_IMAGE_TOKENS", "openai-tile", "image token rule for estimates and TPM: `openai-tile`, `qwen-vl` or a fixed count"),
    Setting("SEKE_VLLM_CAPABILITIES", "auto", "`auto` (probe the endpoint) or e.g. `n,json_schema,logprobs`"),
    Setting("SEKE_VLLM_CAPABILITY_TTL_S", "86400", "how long detected endpoint capabilities are reused"),
    Setting("SEKE_VLLM_BATCH_PRICE_FACTOR", "0.5", "Batch API price relative to online prices"),
    Setting("SEKE_VLLM_CACHE", "1", "`0` turns the content-addressed response cache (lake table `vllm_cache`) off"),
    Setting("DAGSTER_HOME", "./.dagster (Makefile)", "Dagster instance (SQLite by default; see infra/)"),
    # read by the test suite only
    Setting("SEKE_TEST_PG_URL", "—", "tests: an existing PostgreSQL server to use instead of starting one"),
    Setting("SEKE_CHROMIUM", "/usr/bin/chromium", "tests: the browser the UI test drives"),
    Setting("SEKE_LABEL_STUDIO_SDK", "—", "tests: run the optional Label Studio SDK cross-check"),
)


def settings_table() -> str:
    """The README's configuration table (Markdown), generated from :data:`SETTINGS`."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.default if s.default == "—" else f"`{s.default}`"
        rows.append(f"| `{s.name}` | {default} | {s.meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)

_NAMES = {s.name for s in SETTINGS}


def raw(name: str) -> str | None:
    """The variable's value, ``None`` when unset or empty. Only names in :data:`SETTINGS`."""
    if name not in _NAMES:
        raise KeyError(f"{name} is not a documented setting: add it to resources.settings.SETTINGS")
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def env_str(name: str) -> Any:
    """``EnvVar(name)`` when set (the UI shows the variable), else ``None`` (resource default)."""
    return EnvVar(name) if raw(name) is not None else None


def env_int(name: str) -> Any:
    return EnvVar.int(name) if raw(name) is not None else None


def env_parsed(name: str, parse: Callable[[str], Any]) -> Any:
    """A float/bool/list variable parsed here (``EnvVar`` is string/int only), else ``None``."""
    value = raw(name)
    return None if value is None else parse(value)


def flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off")


def given(**fields: Any) -> dict[str, Any]:
    """Only the fields whose variable is set: the rest keep the resource's defaults."""
    return {k: v for k, v in fields.items() if v is not None}


def pool_members(value: str) -> list[Any]:
    """``SEKE_ANNOTATOR_POOL``: a JSON list of member objects (PoolMemberConfig fields)."""
    import json

    from resources.annotator import PoolMemberConfig

    members = json.loads(value)
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise ValueError("SEKE_ANNOTATOR_POOL must be a JSON list of objects")
    return [PoolMemberConfig(**m) for m in members]


def executor_kind() -> str:
    return (raw("SEKE_EXECUTOR") or "multiprocess").lower()


def annotator_kind() -> str:
    """``offline`` or ``vllm``: also names the run-queue tag of the annotation jobs."""
    return (raw("SEKE_ANNOTATOR") or "offline").lower()


def cache_dir() -> str:
    return os.path.expanduser(raw("SEKE_CACHE_DIR") or os.path.join("~", ".cache", "seke"))


def dagster_home() -> str | None:
    return raw("DAGSTER_HOME")


def default_resources() -> dict[str, Any]:
    """The code location's resources, configured from the environment."""
    from dagster_aws.s3 import S3Resource

    from resources.annotator import AnnotatorResource
    from resources.data import DevDataResource, KnowledgeTablesResource, ReviewResource
    from resources.gpu import GPUResource
    from resources.lake import LakeResource
    from resources.landing import LandingZoneResource
    from resources.vllm import VLLMResource
    from resources.warehouse import WarehouseResource

    s3 = S3Resource(**given(endpoint_url=env_str("SEKE_S3_ENDPOINT"), region_name=env_str("AWS_REGION")))
    vllm = VLLMResource(**given(
        base_url=env_str("SEKE_VLLM_BASE_URL"), model=env_str("SEKE_VLLM_MODEL"),
        api_key_env=raw("SEKE_VLLM_API_KEY_ENV"),
        max_concurrency=env_int("SEKE_VLLM_MAX_CONCURRENCY"),
        timeout_s=env_parsed("SEKE_VLLM_TIMEOUT_S", float),
        max_retries=env_int("SEKE_VLLM_MAX_RETRIES"), max_calls=env_int("SEKE_VLLM_MAX_CALLS"),
        max_usd=env_parsed("SEKE_VLLM_MAX_USD", float),
        price_input_per_1m=env_parsed("SEKE_VLLM_PRICE_INPUT_PER_1M", float),
        price_output_per_1m=env_parsed("SEKE_VLLM_PRICE_OUTPUT_PER_1M", float),
        temperature=env_parsed("SEKE_VLLM_TEMPERATURE", float),
        top_p=env_parsed("SEKE_VLLM_TOP_P", float), seed=env_int("SEKE_VLLM_SEED"),
        max_tokens=env_int("SEKE_VLLM_MAX_TOKENS"), capabilities=env_str("SEKE_VLLM_CAPABILITIES"),
        rpm=env_parsed("SEKE_VLLM_RPM", float), tpm=env_parsed("SEKE_VLLM_TPM", float),
        image_token_rule=env_str("SEKE_VLLM_IMAGE_TOKENS"),
        capability_ttl_s=env_parsed("SEKE_VLLM_CAPABILITY_TTL_S", float),
        batch_price_factor=env_parsed("SEKE_VLLM_BATCH_PRICE_FACTOR", float),
        cache_enabled=env_parsed("SEKE_VLLM_CACHE", flag)))
    landing_path = env_str("SEKE_LANDING_URI") or env_str("SEKE_LANDING_DIR")
    return {
        "s3": s3,
        "lake": LakeResource(s3=s3, **given(uri=env_str("SEKE_LAKE_URI"))),
        "landing": LandingZoneResource(s3=s3, scratch_dir=os.path.join(cache_dir(), "landing"), **given(
            path=landing_path,
            allowed_roots=env_parsed("SEKE_LANDING_ALLOWED_ROOTS",
                                     lambda v: [p for p in v.split(os.pathsep) if p]),
            subject_patterns=env_parsed("SEKE_SUBJECT_PATTERNS", parse_subject_patterns))),
        "annotator": AnnotatorResource(vllm=vllm, weights_dir=cache_dir(), **given(
            kind=env_str("SEKE_ANNOTATOR"), seed=env_int("SEKE_SEED"),
            expression_checkpoint=env_str("SEKE_EXPRESSION_CHECKPOINT"),
            expression_checkpoint_weights=env_str("SEKE_EXPRESSION_CHECKPOINT_WEIGHTS"),
            pool=env_parsed("SEKE_ANNOTATOR_POOL", pool_members),
            pool_strategy=env_str("SEKE_POOL_STRATEGY"), pool_verifier=env_str("SEKE_POOL_VERIFIER"),
            pool_cross_check=env_parsed("SEKE_POOL_CROSS_CHECK", flag))),
        "duckdb": WarehouseResource(**given(path=env_str("SEKE_DUCKDB_PATH"))),
        "review_dir": ReviewResource(**given(path=env_str("SEKE_REVIEW_DIR"),
                                             qa_rate=env_parsed("SEKE_REVIEW_QA_RATE", float))),
        "knowledge_tables": KnowledgeTablesResource(**given(version=env_str("SEKE_KNOWLEDGE_VERSION"))),
        "dev_data": DevDataResource(**given(path=env_str("SEKE_SHARED_DATA"))),
        "gpu": GPUResource(),
    }
