"""The VLLM endpoint as a Dagster resource, configured from the environment.

Any OpenAI-compatible vision chat endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, LM Studio).
Rate limiting is two-level: the asset holding the endpoint runs in the Dagster concurrency pool
:data:`VLLM_POOL` (``pool="vllm"`` on the asset; set its limit with
``dagster instance concurrency set vllm N`` or ``concurrency.pools`` in dagster.yaml), and
inside the step an asyncio semaphore bounds in-flight requests (``max_concurrency``).

The API key is read from ``OPENAI_API_KEY`` when the annotator is built and handed only to the
SDK; it is not a resource field, so it never shows in the Dagster UI, run config or logs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.cache import CapabilityMemo, ResponseCache
from seke.knowledge import Knowledge
from seke.lake import Lake

if TYPE_CHECKING:
    from seke.annotators.vllm_batch import VLLMBatchRunner

#: Name of the Dagster concurrency pool shared by every step that calls the VLLM endpoint.
VLLM_POOL = "vllm"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_float(name: str, default: float | None = None) -> float | None:
    """The variable as a float, ``default`` only when it is unset (``0`` stays ``0``)."""
    v = _env(name)
    return float(v) if v is not None else default


def _env_int(name: str, default: int | None = None) -> int | None:
    """The variable as an int, ``default`` only when it is unset (``0`` stays ``0``)."""
    v = _env(name)
    return int(v) if v is not None else default


class VLLMResource(ConfigurableResource):
    """OpenAI-compatible vision endpoint used by SEKE sampling and verification."""

    base_url: str = Field(default_factory=lambda: _env("SEKE_VLLM_BASE_URL", "https://api.openai.com/v1"),
                          description="Chat-completions base URL (env SEKE_VLLM_BASE_URL)")
    model: str = Field(default_factory=lambda: _env("SEKE_VLLM_MODEL", "gpt-4o"),
                       description="Model name (env SEKE_VLLM_MODEL)")
    api_key_env: str = Field(default="OPENAI_API_KEY",
                             description="Name of the env var holding the API key (never the key itself)")
    max_concurrency: int = Field(default_factory=lambda: _env_int("SEKE_VLLM_MAX_CONCURRENCY", 8),
                                 description="In-flight requests per step (env SEKE_VLLM_MAX_CONCURRENCY)")
    timeout_s: float = Field(default_factory=lambda: _env_float("SEKE_VLLM_TIMEOUT_S", 60.0),
                             description="Per-request timeout in seconds (env SEKE_VLLM_TIMEOUT_S)")
    max_retries: int = Field(default_factory=lambda: _env_int("SEKE_VLLM_MAX_RETRIES", 2),
                             description="SDK retries on 408/409/429/5xx/timeouts, honouring retry-after")
    max_calls: int | None = Field(default_factory=lambda: _env_int("SEKE_VLLM_MAX_CALLS"),
                                  description="Per-run cap on model calls (env SEKE_VLLM_MAX_CALLS)")
    max_usd: float | None = Field(default_factory=lambda: _env_float("SEKE_VLLM_MAX_USD"),
                                  description="Per-run cap on spend in USD (env SEKE_VLLM_MAX_USD)")
    price_input_per_1m: float = Field(default_factory=lambda: _env_float("SEKE_VLLM_PRICE_INPUT_PER_1M", 0.0),
                                      description="USD per 1M prompt tokens (env SEKE_VLLM_PRICE_INPUT_PER_1M)")
    price_output_per_1m: float = Field(default_factory=lambda: _env_float("SEKE_VLLM_PRICE_OUTPUT_PER_1M", 0.0),
                                       description="USD per 1M completion tokens (env SEKE_VLLM_PRICE_OUTPUT_PER_1M)")
    temperature: float = Field(default_factory=lambda: _env_float("SEKE_VLLM_TEMPERATURE", 0.7),
                               description="Sampling temperature for Monte Carlo samples")
    top_p: float | None = Field(default_factory=lambda: _env_float("SEKE_VLLM_TOP_P"))
    seed: int | None = Field(default_factory=lambda: _env_int("SEKE_VLLM_SEED"),
                             description="Base seed; sample i uses seed + i")
    max_tokens: int = Field(default_factory=lambda: _env_int("SEKE_VLLM_MAX_TOKENS", 1200))
    capabilities: str = Field(default_factory=lambda: _env("SEKE_VLLM_CAPABILITIES", "auto"),
                              description="auto (probe the endpoint) or e.g. 'n,json_schema,logprobs'")
    capability_ttl_s: float = Field(default_factory=lambda: _env_float("SEKE_VLLM_CAPABILITY_TTL_S", 86400.0),
                                    description="How long detected endpoint capabilities are reused (lake table vllm_capabilities)")
    batch_price_factor: float = Field(default_factory=lambda: _env_float("SEKE_VLLM_BATCH_PRICE_FACTOR", 0.5),
                                      description="Batch API price relative to online prices")
    cache_enabled: bool = Field(default_factory=lambda: _env("SEKE_VLLM_CACHE", "1") not in ("0", "false"),
                                description="Content-addressed response cache in the lake (table vllm_cache)")

    def config(self) -> VLLMConfig:
        """The plain config object (reads the API key from the environment now)."""
        return VLLMConfig(
            base_url=self.base_url, model=self.model,
            api_key=os.environ.get(self.api_key_env) or "EMPTY",
            timeout_s=self.timeout_s, max_retries=self.max_retries,
            max_concurrency=self.max_concurrency, temperature=self.temperature, top_p=self.top_p,
            seed=self.seed, max_tokens=self.max_tokens, max_calls=self.max_calls,
            max_usd=self.max_usd, price_input_per_1m=self.price_input_per_1m,
            price_output_per_1m=self.price_output_per_1m, capabilities=self.capabilities)

    def annotator(self, knowledge: Knowledge, lake: Lake | None) -> VLLMAnnotator:
        """A ready annotator whose answers are cached in ``lake`` (budget is per annotator = per run)."""
        config = self.config()
        cache = ResponseCache(lake if self.cache_enabled else None, model=self.model,
                              secrets=[config.api_key])
        memo = CapabilityMemo(lake, ttl_s=self.capability_ttl_s) if lake is not None else None
        return VLLMAnnotator(config, knowledge, cache, memo)

    def batch_runner(self, annotator: VLLMAnnotator, lake: Lake | None) -> "VLLMBatchRunner":
        """Batch API mode (backfills): submit / poll / collect into the same response cache."""
        from seke.annotators.vllm_batch import VLLMBatchRunner

        return VLLMBatchRunner(annotator, lake, price_factor=self.batch_price_factor)
