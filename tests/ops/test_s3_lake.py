"""seke.lake.Lake (Delta tables) against a real S3 server (SeaweedFS): atomic, idempotent,
safe with concurrent writers (conditional put), DuckDB-readable."""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from seke import schemas
import threading

from seke.lake import Lake



def _labels(n: int, batch: str, offset: int = 0) -> pa.Table:
    rows = {
        "face_id": [f"{batch}-{i + offset:05d}" for i in range(n)],
        "status": ["accepted" if i % 5 else "abstained" for i in range(n)],
        "expression": [["happiness", "sadness", "anger", "neutral"][i % 4] for i in range(n)],
        "valence": [((i % 21) - 10) / 10 for i in range(n)],
        "arousal": [((i % 11) - 5) / 10 for i in range(n)],
        "aus": [[6, 12] if i % 4 == 0 else [] for i in range(n)],
        "n_samples": [3] * n,
    }
    return schemas.conform(pa.table(rows), schemas.VERIFIED_LABELS)


def test_write_read_roundtrip_on_s3(s3_lake_uri: str, seaweedfs) -> None:
    lake = Lake(s3_lake_uri, s3_endpoint=seaweedfs.endpoint)
    assert lake.is_s3
    commit = lake.write_partition("verified_labels", {"source": "ckplus", "batch": "b1"}, _labels(40, "b1"))
    lake.write_partition("verified_labels", {"source": "fer2013", "batch": "b2"}, _labels(25, "b2"))

    # The objects really are in the bucket: a Delta log and hive-style data paths.
    prefix = s3_lake_uri.split("/", 3)[3]
    keys = [o["Key"] for o in seaweedfs.client().list_objects_v2(
        Bucket=seaweedfs.bucket, Prefix=prefix)["Contents"]]
    assert f"{prefix}/verified_labels/_delta_log/00000000000000000000.json" in keys
    assert any(k.startswith(f"{prefix}/verified_labels/source=ckplus/batch=b1/") and k.endswith(".parquet") for k in keys)
    assert commit.uri == f"{s3_lake_uri}/verified_labels" and commit.version == 1

    part = lake.read_partition("verified_labels", {"source": "ckplus", "batch": "b1"})
    assert part.height == 40 and set(part["source"]) == {"ckplus"}
    assert lake.read_table("verified_labels").height == 65
    assert lake.tables() == ["verified_labels"]


def test_rewrite_is_idempotent_and_replaces(s3_lake_uri: str, seaweedfs) -> None:
    lake = Lake(s3_lake_uri, s3_endpoint=seaweedfs.endpoint)
    key = {"source": "ckplus", "batch": "b1"}
    for _ in range(3):
        lake.write_partition("verified_labels", key, _labels(30, "b1"))
    assert lake.read_table("verified_labels").height == 30
    # A smaller re-materialization replaces the partition, never appends.
    lake.write_partition("verified_labels", key, _labels(7, "b1", offset=100))
    frame = lake.read_table("verified_labels")
    assert frame.height == 7 and frame["face_id"].str.contains("-001").all()
    assert len(lake.files("verified_labels")) == 1
    assert lake.read_table("verified_labels", version=1).height == 30   # older versions stay readable
    lake.delete_partition("verified_labels", key)
    assert not lake.exists("verified_labels", key)


def test_concurrent_writers_on_s3_all_commit(s3_lake_uri: str, seaweedfs) -> None:
    """Two writers of one partition on S3: delta-rs' conditional put makes one lose each race,
    it retries, and every version holds exactly one writer's frame."""
    lake = Lake(s3_lake_uri, s3_endpoint=seaweedfs.endpoint)
    key = {"source": "ckplus", "batch": "same"}
    errors: list[BaseException] = []

    def write(tag: int) -> None:
        try:
            for i in range(6):
                lake.write_partition("verified_labels", key, _labels(10 + tag, f"w{tag}", offset=i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    seen = set()
    for v in range(lake.version("verified_labels") + 1):   # creation commit(s), then the overwrites
        frame = lake.read_table("verified_labels", version=v)
        if frame.height:
            assert frame.height in (10, 11) and frame["face_id"].str.slice(0, 2).n_unique() == 1, v
            seen.add(tuple(sorted(frame["face_id"].to_list())))
    assert len(seen) == 12                                  # every write committed, none lost


def test_duckdb_reads_s3_lake_through_arrow_dataset(s3_lake_uri: str, seaweedfs) -> None:
    lake = Lake(s3_lake_uri, s3_endpoint=seaweedfs.endpoint)
    lake.write_partition("verified_labels", {"source": "ckplus", "batch": "b1"}, _labels(40, "b1"))
    lake.write_partition("verified_labels", {"source": "fer2013", "batch": "b2"}, _labels(24, "b2"))
    labels = lake.dataset("verified_labels")  # noqa: F841 - scanned by DuckDB by name
    con = duckdb.connect()
    rows = con.execute(
        "SELECT source, expression, count(*) AS n, avg(valence) AS v FROM labels "
        "WHERE status = 'accepted' GROUP BY ALL ORDER BY ALL").fetchall()
    expected = (pl.concat([_labels_pl(40, "b1", "ckplus"), _labels_pl(24, "b2", "fer2013")])
                .filter(pl.col("status") == "accepted")
                .group_by("source", "expression").agg(pl.len().alias("n"), pl.col("valence").mean())
                .sort("source", "expression"))
    assert [(r[0], r[1], r[2]) for r in rows] == list(zip(expected["source"], expected["expression"], expected["n"]))
    for got, want in zip([r[3] for r in rows], expected["valence"]):
        assert got == pytest.approx(want)
    # Partition pruning works through the hive columns.
    assert con.execute("SELECT count(*) FROM labels WHERE source = 'fer2013'").fetchall()[0][0] == 24


def _labels_pl(n: int, batch: str, source: str) -> pl.DataFrame:
    return pl.from_arrow(_labels(n, batch)).with_columns(pl.lit(source).alias("source"))


def test_s3resource_lists_landing_batches(seaweedfs, s3_lake_uri: str) -> None:
    """dagster-aws' S3Resource sees landing folders the way the landing sensor will."""
    from dagster_aws.s3 import S3Resource

    from seke.landing import list_landing_batches

    client = seaweedfs.client()
    root = s3_lake_uri.split("/", 3)[3] + "/landing"
    for src, batch in [("ckplus", "2026-11-01"), ("ckplus", "2026-11-02"), ("fer2013", "b7")]:
        client.put_object(Bucket=seaweedfs.bucket, Key=f"{root}/{src}/{batch}/manifest.csv", Body=b"file_name\n")
    client.put_object(Bucket=seaweedfs.bucket, Key=f"{root}/wild/incomplete/img.png", Body=b"x")

    resource = S3Resource(endpoint_url=seaweedfs.endpoint, aws_access_key_id=seaweedfs.access_key,
                          aws_secret_access_key=seaweedfs.secret_key, region_name=seaweedfs.region)
    found = list_landing_batches(f"s3://{seaweedfs.bucket}/{root}", s3_client=resource.get_client())
    # Only complete batches (with manifest.csv) count; the key is <source>__<batch>.
    assert found == ["ckplus__2026-11-01", "ckplus__2026-11-02", "fer2013__b7"]
