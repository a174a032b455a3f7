"""The deployment files parse, validate against Dagster's own schemas and agree with the code."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import dagster
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CODE_MODULE = "pipelines.definitions"


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def _project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _validate_instance_yaml(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    for key, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "u",
                       "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d", "DAGSTER_HOME": str(tmp_path),
                       "DAGSTER_COMPUTE_LOG_BUCKET": "b", "SEKE_S3_ENDPOINT": "http://s3",
                       "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    shutil.copy(INFRA / name, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on any schema error
    return dict(config)


@pytest.mark.parametrize("name", ["dagster.yaml", "dagster.postgres.yaml"])
def test_instance_yaml_validates_against_dagster_schema(name: str, tmp_path, monkeypatch) -> None:
    config = _validate_instance_yaml(name, tmp_path, monkeypatch)
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "seke/backend", "value": "vllm"}.items() <= limits[0].items()
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    assert config["run_retries"]["enabled"] is True
    assert "compute_logs" in config
    # A SIGKILLed run keeps its pool slots: the daemon must fail stuck runs and free the slots
    # of ended ones (keys checked against Dagster's schema above, so none is silently ignored).
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert 0 < monitoring["start_timeout_seconds"] <= 600
    assert 0 < monitoring["cancel_timeout_seconds"] <= 600
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 300
    assert monitoring["max_resume_run_attempts"] == 0  # the default launcher cannot resume


def test_postgres_yaml_uses_postgres_storage_from_env() -> None:
    cfg = _load("dagster.postgres.yaml")
    db = cfg["storage"]["postgres"]["postgres_db"]
    # No credentials in the file: every field comes from the environment.
    assert all(isinstance(v, dict) and set(v) == {"env"} for k, v in db.items() if k != "scheme"), db
    assert db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 would pick psycopg 3
    assert cfg["compute_logs"]["module"].startswith("dagster_aws.")


def test_workspace_points_at_the_code_module() -> None:
    ws = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    modules = [entry["python_module"] if isinstance(entry["python_module"], str)
               else entry["python_module"]["module_name"]
               for entry in ws["load_from"] if "python_module" in entry]
    assert modules == [CODE_MODULE]
    docker_ws = _load("workspace.docker.yaml")
    assert docker_ws["load_from"][0]["grpc_server"]["host"] == "code"


def test_compose_services_and_module_names() -> None:
    compose = _load("docker-compose.yaml")
    services = compose["services"]
    assert {"postgres", "seaweedfs", "code", "webserver", "daemon"} <= set(services)
    code_cmd = services["code"]["command"]
    assert code_cmd[code_cmd.index("-m") + 1] == CODE_MODULE
    port = code_cmd[code_cmd.index("-p") + 1]
    assert str(_load("workspace.docker.yaml")["load_from"][0]["grpc_server"]["port"]) == port
    image = f"seke-platform:{_project_version()}"
    assert {services[s]["image"] for s in ("code", "webserver", "daemon")} == {image}
    for name in ("webserver", "daemon"):
        cmd = services[name]["command"]
        assert cmd[cmd.index("-w") + 1] == "/opt/dagster/app/workspace.docker.yaml"
    env = services["code"]["environment"]
    assert env["SEKE_LAKE_URI"].startswith("s3://") and env["DAGSTER_PG_HOST"] == "postgres"
    # Host ports are loopback only.
    for svc in services.values():
        for mapping in svc.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), mapping
    # The S3 bucket seaweedfs creates is the one the lake and compute logs use.
    bucket = services["seaweedfs"]["environment"]["S3_BUCKET"]
    assert env["SEKE_LAKE_URI"].split("/")[2] == bucket == env["DAGSTER_COMPUTE_LOG_BUCKET"]


def test_dockerfile_copies_existing_paths_and_serves_module() -> None:
    text = (INFRA / "Dockerfile").read_text()
    for src in re.findall(r"^COPY\s+(\S+)\s+\S+", text, flags=re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies missing path {src}"
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])", text, flags=re.M).group(1))
    assert cmd[cmd.index("-m") + 1] == CODE_MODULE
    assert 'pip install ".[k8s]"' in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("dagster-k8s==") for d in extras["k8s"])


def test_helm_values_match_code_and_dagster_version() -> None:
    values = _load("helm/values.yaml")
    deployment = values["dagster-user-deployments"]["deployments"][0]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == CODE_MODULE
    assert deployment["image"]["tag"] == _project_version()
    assert values["dagsterWebserver"]["image"]["tag"] == dagster.__version__
    assert values["dagsterDaemon"]["image"]["tag"] == dagster.__version__
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["SEKE_EXECUTOR"] == "k8s"
    assert values["postgresql"]["enabled"] is False
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    runs, pg = values["concurrency"]["runs"], _load("dagster.postgres.yaml")["concurrency"]
    # The Helm-rendered instance and the compose instance have the same queue policy.
    assert runs["maxConcurrentRuns"] == pg["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == pg["runs"]["tag_concurrency_limits"]
    assert values["concurrency"]["pools"]["defaultLimit"] == pg["pools"]["default_limit"]
    # ... and the same run monitoring (the chart renders these camelCase keys into run_monitoring).
    helm_mon, pg_mon = values["dagsterDaemon"]["runMonitoring"], _load("dagster.postgres.yaml")["run_monitoring"]
    for camel, snake in (("enabled", "enabled"), ("startTimeoutSeconds", "start_timeout_seconds"),
                         ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
                         ("maxResumeRunAttempts", "max_resume_run_attempts"),
                         ("pollIntervalSeconds", "poll_interval_seconds"),
                         ("freeSlotsAfterRunEndSeconds", "free_slots_after_run_end_seconds")):
        assert helm_mon[camel] == pg_mon[snake], camel


def test_gpu_step_tags_are_valid_dagster_k8s_config() -> None:
    dagster_k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s is the optional `k8s` extra")
    from dagster_k8s.job import get_user_defined_k8s_config

    from pipelines.ops_k8s import step_executor
    from resources.deployment import gpu_op_tags

    tags = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in gpu_op_tags().items()}
    cfg = get_user_defined_k8s_config(tags)  # validates against dagster-k8s' schema
    assert cfg.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cfg.pod_spec_config["node_selector"]
    assert step_executor("k8s").name == dagster_k8s.k8s_job_executor.name
    assert step_executor("multiprocess").name == dagster.multiprocess_executor.name
    with pytest.raises(ValueError):
        step_executor("celery")
