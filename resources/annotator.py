"""Which annotator produces the Monte Carlo samples: the offline models or a VLLM endpoint."""

import os
from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from resources.vllm import VLLMResource
from seke.annotation import Annotator
from seke.knowledge import Knowledge
from seke.lake import Lake


class AnnotatorResource(ConfigurableResource):
    """``kind``: ``offline`` (embedded LiteRT models, no key, no network — the default) or
    ``vllm`` (the nested ``vllm`` endpoint resource). Every step that annotates (sampling,
    the Batch API prefill, evaluation) builds its annotator here, so one setting drives all."""

    kind: str = Field(default="offline", description="offline | vllm (env SEKE_ANNOTATOR)")
    seed: int = Field(default=0, description="seed of the offline annotator's test-time augmentation (env SEKE_SEED)")
    weights_dir: str = Field(default_factory=lambda: os.path.expanduser(os.path.join("~", ".cache", "seke")),
                             description="where `seke fetch-weights` put the offline models (env SEKE_CACHE_DIR)")
    vllm: Optional[VLLMResource] = Field(default=None,  # type: ignore[valid-type]
                                         description="the OpenAI-compatible endpoint (env SEKE_VLLM_*; "
                                                     "unset: the resource's defaults)")

    def endpoint(self) -> VLLMResource:  # type: ignore[valid-type]
        return self.vllm or VLLMResource()

    def build(self, knowledge: Knowledge, lake: Lake) -> Annotator:
        if self.kind == "offline":
            from seke.annotators.offline import OfflineAnnotator
            from seke.weights import use_cache_dir

            use_cache_dir(self.weights_dir)
            return OfflineAnnotator(knowledge, seed=self.seed)
        if self.kind == "vllm":
            return self.endpoint().annotator(knowledge, lake)
        raise ValueError(f"unknown annotator kind {self.kind!r}: use offline or vllm")
