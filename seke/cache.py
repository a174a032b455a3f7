"""Content-addressed request -> response cache for model calls, persisted in the lake.

Why: VLLM calls cost money and time. A re-run, a retry of a failed step or a backfill must
never pay twice for the same sample, so every finished sample is stored under a key made of
everything that determines it: model, prompt hash (which covers the template version and the
knowledge fingerprint), image sha256, sampling parameters and sample index.

Storage is append-only and crash-safe: each flush is ONE Delta append commit to the lake table
``vllm_cache`` (:meth:`seke.lake.Lake.append`), safe with concurrent writers (two steps sharing
the cache both commit). A crash can lose only entries not yet flushed; a committed flush is
always complete. :meth:`ResponseCache.compact` merges the small files with Delta's optimize
(one commit; duplicates are harmless because keys are deduplicated on load).

The cache stores results only, never request headers. Results hold server text (raw answers,
refusals), which the annotator scrubs of the API key before it gets here; given ``secrets``,
:meth:`ResponseCache.put` scrubs once more (:func:`seke.scrub.scrub`) as the last gate before
the lake.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import polars as pl

from seke.lake import Lake
from seke.scrub import scrub, secret_list

CACHE_TABLE = "vllm_cache"

CACHE_SCHEMA: dict[str, Any] = {
    "key": pl.String, "kind": pl.String, "model": pl.String, "prompt_hash": pl.String,
    "image_sha256": pl.String, "sample_index": pl.Int32, "params": pl.String,
    "result_json": pl.String, "created_at": pl.Float64,
}


def image_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(model: str, prompt_hash: str, image_sha: str, params: Mapping[str, Any],
              sample_index: int, kind: str = "sample") -> str:
    """The content address of one sample (sha256 over a canonical JSON of its identity)."""
    payload = json.dumps({"kind": kind, "model": model, "prompt": prompt_hash, "image": image_sha,
                          "params": dict(params), "index": int(sample_index)},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class CacheEntry:
    key: str
    kind: str
    model: str
    prompt_hash: str
    image_sha256: str
    sample_index: int
    params: str
    result: dict[str, Any]


class ResponseCache:
    """In-memory index over the lake table plus a buffer of entries awaiting flush.

    Thread-safe: the annotator's event-loop thread puts entries while a flush may run in a
    worker thread. ``lake=None`` gives a memory-only cache (tests, dry runs). ``secrets`` (the
    endpoint's API key) are scrubbed from every stored result.
    """

    def __init__(self, lake: Lake | None, table: str = CACHE_TABLE, model: str | None = None,
                 secrets: Iterable[str | None] = ()) -> None:
        self.lake = lake
        self.table = table
        self._secrets = secret_list(secrets)
        self._entries: dict[str, dict[str, Any]] = {}
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.files_written = 0
        self._load(model)

    def _load(self, model: str | None) -> None:
        if self.lake is None or not self.lake.exists(self.table):
            return
        frame = self.lake.read_table(self.table)
        if frame.is_empty():
            return
        if model is not None:
            frame = frame.filter(pl.col("model") == model)
        for key, result in zip(frame["key"].to_list(), frame["result_json"].to_list()):
            self._entries[key] = json.loads(result)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self.misses += 1
            else:
                self.hits += 1
            return hit

    def has(self, key: str) -> bool:
        """Whether ``key`` is stored (not counted as a hit or a miss)."""
        with self._lock:
            return key in self._entries

    def put(self, entry: CacheEntry) -> None:
        result_json = json.dumps(entry.result, sort_keys=True)
        if self._secrets:
            clean = scrub(result_json, self._secrets)
            if clean != result_json:
                result_json = clean
                entry.result = json.loads(clean)
        row = {"key": entry.key, "kind": entry.kind, "model": entry.model,
               "prompt_hash": entry.prompt_hash, "image_sha256": entry.image_sha256,
               "sample_index": entry.sample_index, "params": entry.params,
               "result_json": result_json, "created_at": time.time()}
        with self._lock:
            self._entries[entry.key] = entry.result
            self._pending.append(row)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write buffered entries as one new atomic Parquet file; returns rows written."""
        if self.lake is None:
            with self._lock:
                n, self._pending = len(self._pending), []
            return n
        with self._flush_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return 0
            try:
                self.lake.append(self.table, pl.DataFrame(rows, schema=CACHE_SCHEMA))
            except BaseException:
                with self._lock:  # keep them for the next attempt
                    self._pending[:0] = rows
                raise
            self.files_written += 1
            return len(rows)

    def compact(self) -> int:
        """Merge the flush files (Delta optimize, one commit); returns the distinct keys."""
        if self.lake is None or not self.lake.exists(self.table):
            return 0
        with self._flush_lock:
            self.lake.compact(self.table)
            return self.lake.read_table(self.table)["key"].n_unique()


# ---- endpoint capability memo ----------------------------------------------------------------
CAPABILITY_TABLE = "vllm_capabilities"


def endpoint_id(base_url: str, model: str) -> str:
    """Stable id of an endpoint+model (the URL is hashed, so nothing in it is stored in clear)."""
    return hashlib.sha256(f"{base_url.rstrip('/')}|{model}".encode()).hexdigest()[:16]


class CapabilityMemo:
    """Remembers what an endpoint supports (n, response_format, logprobs) for ``ttl_s`` seconds.

    Why: every Dagster step is a new process; probing the endpoint in each step costs calls and
    a full round-trip of latency before the first sample. Detected capabilities are kept in
    memory and in the lake (one tiny partition per endpoint, replaced atomically) so an
    endpoint is probed once per TTL, not once per step. A 400 or an ignored ``n`` still
    downgrades on the fly, and the downgrade is written back.
    """


    def __init__(self, lake: Lake | None, ttl_s: float = 24 * 3600, table: str = CAPABILITY_TABLE) -> None:
        self.lake = lake
        self.ttl_s = ttl_s
        self.table = table

    def get(self, endpoint: str) -> dict[str, Any] | None:
        if self.lake is None or not self.lake.exists(self.table, {"endpoint": endpoint}):
            return None
        row = self.lake.read_partition(self.table, {"endpoint": endpoint}).row(0, named=True)
        if time.time() - row["detected_at"] > self.ttl_s:
            return None
        return json.loads(row["capabilities"])

    def put(self, endpoint: str, capabilities: dict[str, Any]) -> None:
        if self.lake is not None:
            self.lake.write_partition(self.table, {"endpoint": endpoint}, pl.DataFrame(
                {"capabilities": [json.dumps(capabilities, sort_keys=True)], "detected_at": [time.time()]}))
