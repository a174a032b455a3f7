"""Which annotator produces the Monte Carlo samples: the offline models or a VLLM endpoint."""

import os

from dagster import ConfigurableResource
from pydantic import Field

from seke.annotation import Annotator
from seke.knowledge import Knowledge
from seke.lake import Lake


class AnnotatorResource(ConfigurableResource):
    """``kind``: ``offline`` (embedded LiteRT models, no key, no network — the default) or
    ``vllm`` (any OpenAI-compatible vision endpoint, configured by ``SEKE_VLLM_*``)."""

    kind: str = Field(default_factory=lambda: os.environ.get("SEKE_ANNOTATOR", "offline"),
                      description="offline | vllm (env SEKE_ANNOTATOR)")
    seed: int = Field(default_factory=lambda: int(os.environ.get("SEKE_SEED", "0")))

    def build(self, knowledge: Knowledge, lake: Lake) -> Annotator:
        if self.kind == "offline":
            from seke.annotators.offline import OfflineAnnotator

            return OfflineAnnotator(knowledge, seed=self.seed)
        if self.kind == "vllm":
            from resources.vllm import VLLMResource

            return VLLMResource().annotator(knowledge, lake)
        raise ValueError(f"unknown annotator kind {self.kind!r}: use offline or vllm")
