"""Response cache and capability memo on a real Parquet lake."""

import time

import polars as pl

from seke.cache import (CACHE_TABLE, CacheEntry, CapabilityMemo, ResponseCache, cache_key,
                        endpoint_id)
from seke.lake import Lake


def entry(i, model="m"):
    k = cache_key(model, "ph", "img", {"temperature": 0.7}, i)
    return CacheEntry(k, "sample", model, "ph", "img", i, "{}", {"i": i})


def test_key_covers_every_identity_field():
    base = cache_key("m", "ph", "img", {"temperature": 0.7, "seed": 1}, 0)
    assert base == cache_key("m", "ph", "img", {"seed": 1, "temperature": 0.7}, 0)
    others = [cache_key("m2", "ph", "img", {"temperature": 0.7, "seed": 1}, 0),
              cache_key("m", "ph2", "img", {"temperature": 0.7, "seed": 1}, 0),
              cache_key("m", "ph", "img2", {"temperature": 0.7, "seed": 1}, 0),
              cache_key("m", "ph", "img", {"temperature": 1.0, "seed": 1}, 0),
              cache_key("m", "ph", "img", {"temperature": 0.7, "seed": 1}, 1),
              cache_key("m", "ph", "img", {"temperature": 0.7, "seed": 1}, 0, kind="verify")]
    assert len({base, *others}) == 7


def test_flushes_are_atomic_files_and_compaction_dedups(tmp_path):
    lake = Lake(str(tmp_path))
    c = ResponseCache(lake)
    for i in range(3):
        c.put(entry(i))
    assert c.flush() == 3 and c.flush() == 0
    c.put(entry(3))
    c.put(entry(0))          # same key again (e.g. two workers): harmless duplicate
    c.flush()
    assert len(lake.files(CACHE_TABLE)) == 2 and lake.version(CACHE_TABLE) == 2   # creation + two appends
    assert lake.read_table(CACHE_TABLE).height == 5
    fresh = ResponseCache(lake)
    assert len(fresh) == 4 and fresh.get(entry(3).key) == {"i": 3}
    assert fresh.compact() == 4
    assert len(lake.files(CACHE_TABLE)) == 1
    assert len(ResponseCache(lake)) == 4
    # readable by DuckDB over the table's current files
    import duckdb
    files = [f for f, _ in lake.files(CACHE_TABLE)]
    assert duckdb.sql(f"select count(distinct key) from read_parquet({files})").fetchall()[0][0] == 4


def test_model_filter_on_load(tmp_path):
    lake = Lake(str(tmp_path))
    c = ResponseCache(lake)
    c.put(entry(0, "a"))
    c.put(entry(0, "b"))
    c.flush()
    assert len(ResponseCache(lake, model="a")) == 1 and len(ResponseCache(lake)) == 2


def test_capability_memo_roundtrip_and_ttl(tmp_path):
    lake = Lake(str(tmp_path))
    memo = CapabilityMemo(lake, ttl_s=3600)
    eid = endpoint_id("http://h:1/v1?api-key=SECRET", "m")
    assert memo.get(eid) is None
    memo.put(eid, {"n": True, "response_format": "json_object", "logprobs": False})
    assert CapabilityMemo(lake).get(eid) == {"n": True, "response_format": "json_object", "logprobs": False}
    time.sleep(0.01)
    assert CapabilityMemo(lake, ttl_s=0.001).get(eid) is None
    stored = pl.read_parquet(next(tmp_path.rglob("*.parquet")))
    assert "SECRET" not in str(stored.to_dicts()) and "SECRET" not in str(list(tmp_path.rglob("*")))
