"""The VLLM endpoint as a Dagster resource.

Any OpenAI-compatible vision chat endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, LM Studio).
Rate limiting is two-level: the asset holding the endpoint runs in the Dagster concurrency pool
:data:`VLLM_POOL` (``pool="vllm"`` on the asset; set its limit with
``dagster instance concurrency set vllm N`` or ``concurrency.pools`` in dagster.yaml), and
inside the step an asyncio semaphore bounds in-flight requests (``max_concurrency``).

The endpoint's fields are derived from :class:`seke.annotators.vllm_support.VLLMConfig` (one
definition; :mod:`resources.config_models`). The API key is read from the variable named by
``api_key_env`` (``OPENAI_API_KEY``) when the annotator is built and handed only to the SDK; it
is not a resource field, so it never shows in the Dagster UI, run config or logs.
"""

import os
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from resources.config_models import derived, values_for
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.cache import CapabilityMemo, ResponseCache
from seke.knowledge import Knowledge
from seke.lake import Lake

if TYPE_CHECKING:
    from seke.annotators.vllm_batch import VLLMBatchRunner
    from seke.annotators.vllm_batch_rounds import BatchRoundAnnotator, BatchSettings

def api_key_from(env_name: str) -> str:
    """The API key held by the variable ``env_name`` (also used by the pool's members)."""
    return os.environ.get(env_name) or "EMPTY"


#: Name of the Dagster concurrency pool shared by every step that calls the VLLM endpoint.
VLLM_POOL = "vllm"


class _VLLMResourceMethods(ConfigurableResource):
    """Builds the annotator; the endpoint fields come from :class:`VLLMConfig` (see below)."""

    def config(self) -> VLLMConfig:
        """The plain config object (reads the API key from the environment now)."""
        return VLLMConfig(**values_for(VLLMConfig, self),
                          api_key=api_key_from(self.api_key_env))  # type: ignore[attr-defined]

    def annotator(self, knowledge: Knowledge, lake: Lake | None) -> VLLMAnnotator:
        """A ready annotator whose answers are cached in ``lake`` (budget is per annotator = per run)."""
        config = self.config()
        cache = ResponseCache(lake if self.cache_enabled else None, model=config.model,  # type: ignore[attr-defined]
                              secrets=[config.api_key])
        memo = (CapabilityMemo(lake, ttl_s=self.capability_ttl_s)  # type: ignore[attr-defined]
                if lake is not None else None)
        return VLLMAnnotator(config, knowledge, cache, memo)

    def batch_runner(self, annotator: VLLMAnnotator, lake: Lake | None) -> "VLLMBatchRunner":
        """Batch API mode (backfills): submit / poll / collect into the same response cache."""
        from seke.annotators.vllm_batch import VLLMBatchRunner

        return VLLMBatchRunner(annotator, lake,
                               price_factor=self.batch_price_factor)  # type: ignore[attr-defined]

    def batch_annotator(self, annotator: VLLMAnnotator, lake: Lake | None,
                        settings: "BatchSettings") -> "BatchRoundAnnotator":
        """Every SV-UAMC round and verification through the Batch API (same cache, online for
        what a job does not return), priced with this endpoint's ``batch_price_factor``."""
        from dataclasses import replace

        from seke.annotators.vllm_batch_rounds import BatchRoundAnnotator

        return BatchRoundAnnotator(annotator, lake, replace(
            settings, price_factor=self.batch_price_factor))  # type: ignore[attr-defined]


#: The endpoint resource: every :class:`VLLMConfig` field but the key, plus where the key is
#: read from and the cache/capability settings (env ``SEKE_VLLM_*``, see resources.settings).
VLLMResource = derived(
    "VLLMResource", _VLLMResourceMethods, VLLMConfig,
    "OpenAI-compatible vision endpoint used by SEKE sampling and verification.",
    exclude=("api_key",),
    api_key_env=(str, Field("OPENAI_API_KEY", description="name of the env var holding the API key "
                                                            "(never the key itself)")),
    capability_ttl_s=(float, Field(86400.0, description="how long detected endpoint capabilities "
                                                         "are reused (lake table vllm_capabilities)")),
    batch_price_factor=(float, Field(0.5, description="Batch API price relative to online prices")),
    cache_enabled=(bool, Field(True, description="content-addressed response cache in the lake "
                                                 "(table vllm_cache)")),
)
