"""Which annotator produces the Monte Carlo samples: the offline models, a VLLM endpoint, or a pool.

A pool (``kind="pool"``) is several annotators — any mix of OpenAI-compatible endpoints and the
offline models — each with its own price, RPM/TPM limits and roles, combined by SV-UAMC as a
``cascade`` (cheapest first, escalating unresolved faces) or a ``jury`` (verification by a
different model); see :mod:`seke.pool`. A member's fields are derived from
:class:`seke.pool.PoolMember` and :class:`seke.annotators.vllm_support.VLLMConfig` (one
definition each). Every member is validated (missing or negative price, negative limits, roles,
duplicate names) before any client is built, so a bad pool fails at load, not after spending.
"""

import os
from typing import TYPE_CHECKING, Optional

from dagster import Config, ConfigurableResource
from pydantic import Field

from resources.config_models import dataclass_fields, derived, values_for
from resources.vllm import VLLMResource, api_key_from
from seke.annotation import Annotator
from seke.annotators.vllm_support import VLLMConfig
from seke.knowledge import Knowledge
from seke.lake import Lake
from seke.pool import AnnotatorPool, PoolEntry, PoolMember, validate_members

if TYPE_CHECKING:
    from seke.annotators.vllm_batch_rounds import BatchSettings
    from seke.estimate import EstimateMember


class _PoolMemberMethods(Config):
    """One pool member: endpoint fields (kind vllm) plus name, kind, roles and prices."""

    def member(self) -> PoolMember:
        return PoolMember(**values_for(PoolMember, self))

    def endpoint_config(self) -> VLLMConfig:
        """The member's endpoint config (validates prices/limits; reads the key from the env)."""
        values = values_for(VLLMConfig, self)
        values.update(price_input_per_1m=self.price_input_per_1m or 0.0,  # type: ignore[attr-defined]
                      price_output_per_1m=self.price_output_per_1m or 0.0)  # type: ignore[attr-defined]
        return VLLMConfig(**values, api_key=api_key_from(self.api_key_env))  # type: ignore[attr-defined]


PoolMemberConfig = derived(
    "PoolMemberConfig", _PoolMemberMethods, VLLMConfig,
    "One annotator of the pool: an OpenAI-compatible endpoint (kind vllm) or the offline models.",
    exclude=("api_key", "price_input_per_1m", "price_output_per_1m"),
    **dataclass_fields(PoolMember),
    api_key_env=(str, Field("OPENAI_API_KEY", description="name of the env var holding this member's key")),
    cache_enabled=(bool, Field(True, description="response cache in the lake (table vllm_cache)")),
    capability_ttl_s=(float, Field(86400.0, description="reuse of detected capabilities, seconds")),
    batch_price_factor=(float, Field(0.5, description="Batch API price relative to online prices")),
)


class AnnotatorResource(ConfigurableResource):
    """``kind``: ``offline`` (embedded LiteRT models, no key, no network — the default),
    ``vllm`` (the nested ``vllm`` endpoint resource) or ``pool`` (the ``pool`` members). Every
    step that annotates (sampling, the Batch API prefill, evaluation) builds its annotator
    here, so one setting drives all."""

    kind: str = Field(default="offline", description="offline | vllm | pool (env SEKE_ANNOTATOR)")
    seed: int = Field(default=0, description="seed of the offline annotator's test-time augmentation (env SEKE_SEED)")
    weights_dir: str = Field(default_factory=lambda: os.path.expanduser(os.path.join("~", ".cache", "seke")),
                             description="where `seke fetch-weights` put the offline models (env SEKE_CACHE_DIR)")
    expression_checkpoint: Optional[str] = Field(
        default=None, description="offline annotator: a checkpoint folder (local or s3://) trained by the "
                                  "platform's training assets, or several comma-separated (an ensemble, "
                                  "their probabilities averaged), used as a second expression model — pooled "
                                  "into the expression probabilities and a voter in verification; needs the "
                                  "train extra (torch) (env SEKE_EXPRESSION_CHECKPOINT)")
    expression_checkpoint_weights: Optional[str] = Field(
        default=None, description="pooling weight of that checkpoint per source, e.g. 'ckplus=0,*=0.4' "
                                  "(a bare number: every source; unset: 0.4; 0 for a source: not used "
                                  "for its faces); choose it with bench/second_model_weight.py "
                                  "(env SEKE_EXPRESSION_CHECKPOINT_WEIGHTS)")
    vllm: Optional[VLLMResource] = Field(default=None,  # type: ignore[valid-type]
                                         description="the OpenAI-compatible endpoint (env SEKE_VLLM_*; "
                                                     "unset: the resource's defaults)")
    pool: Optional[list[PoolMemberConfig]] = Field(  # type: ignore[valid-type]
        default=None, description="kind=pool: the members (env SEKE_ANNOTATOR_POOL, a JSON list)")
    pool_strategy: str = Field(default="cascade", description="cascade | jury (env SEKE_POOL_STRATEGY)")
    pool_verifier: Optional[str] = Field(default=None, description="member that verifies every face "
                                                                    "(env SEKE_POOL_VERIFIER; unset: "
                                                                    "cascade self, jury another model)")
    pool_cross_check: bool = Field(default=True, description="a face a cheaper cascade stage resolved is "
                                   "re-checked by another member (one verification call) and escalates "
                                   "if it disagrees; jury: every face is verified by another model "
                                   "(env SEKE_POOL_CROSS_CHECK)")

    def endpoint(self) -> VLLMResource:  # type: ignore[valid-type]
        return self.vllm or VLLMResource()

    def _offline(self, knowledge: Knowledge) -> Annotator:
        from seke.annotators.offline import build_offline_annotator
        from seke.weights import use_cache_dir

        use_cache_dir(self.weights_dir)
        return build_offline_annotator(knowledge, seed=self.seed, expression_checkpoint=self.expression_checkpoint,
                                       checkpoint_weights=self.expression_checkpoint_weights)

    def validate_pool(self) -> list[tuple[PoolMember, Optional[VLLMConfig]]]:
        """Members and their endpoint configs, every problem reported at once; no call made."""
        members = [m.member() for m in (self.pool or [])]
        limits = {m.name: {"rpm": m.rpm, "tpm": m.tpm} for m in (self.pool or [])}
        validate_members(members, self.pool_strategy, self.pool_verifier, limits)
        return [(pm, cfg.endpoint_config() if pm.kind == "vllm" else None)
                for pm, cfg in zip(members, self.pool or [])]

    def build_pool(self, knowledge: Knowledge, lake: Lake,
                   batch: Optional["BatchSettings"] = None) -> AnnotatorPool:
        """The members, built; with ``batch``, every VLLM member buys through the Batch API."""
        from dataclasses import replace

        from seke.annotators.vllm import VLLMAnnotator
        from seke.annotators.vllm_batch_rounds import BatchRoundAnnotator
        from seke.cache import CapabilityMemo, ResponseCache

        checked = self.validate_pool()  # raises before any client exists
        entries = []
        for (pm, vcfg), raw in zip(checked, self.pool or []):
            if vcfg is None:
                ann: Annotator = self._offline(knowledge)
            else:
                cache = ResponseCache(lake if raw.cache_enabled else None, model=vcfg.model,
                                      secrets=[vcfg.api_key])
                memo = CapabilityMemo(lake, ttl_s=raw.capability_ttl_s) if lake is not None else None
                ann = VLLMAnnotator(vcfg, knowledge, cache, memo)
                if batch is not None:
                    ann = BatchRoundAnnotator(ann, lake, replace(batch, price_factor=raw.batch_price_factor))
            ann.name = pm.name  # type: ignore[attr-defined]
            entries.append(PoolEntry(pm.name, ann, pm.role_set(), pm.unit_cost()))
        return AnnotatorPool(entries, self.pool_strategy, self.pool_verifier, self.pool_cross_check)

    def estimate_plan(self, batch_api: bool = False) -> tuple[list["EstimateMember"], str, Optional[str]]:
        """Who would be called, in cascade order, with their prices (for seke.estimate); with
        ``batch_api`` the VLLM members' token prices carry their ``batch_price_factor``."""
        from seke.estimate import EstimateMember

        def caps_n(cfg: VLLMConfig) -> bool:
            return cfg.capabilities == "auto" or "n" in {c.strip() for c in cfg.capabilities.split(",")}

        def of(name: str, cfg: VLLMConfig, per_call: float = 0.0, verifies: bool = True,
               factor: float = 1.0) -> EstimateMember:
            f = factor if batch_api else 1.0
            return EstimateMember(name, cfg.model, cfg.price_input_per_1m * f, cfg.price_output_per_1m * f,
                                  per_call, cfg.image_detail, cfg.image_token_rule, caps_n(cfg), "vllm", verifies)

        if self.kind == "pool":
            members = []
            factors = {m.name: m.batch_price_factor for m in (self.pool or [])}
            for pm, vcfg in sorted(self.validate_pool(), key=lambda mc: mc[0].unit_cost()):
                if vcfg is None:
                    members.append(EstimateMember(pm.name, "offline", 0.0, 0.0, pm.price_per_call,
                                                  kind="offline", verifies="verify" in pm.role_set()))
                else:
                    members.append(of(pm.name, vcfg, pm.price_per_call, "verify" in pm.role_set(),
                                      factors[pm.name]))
            return members, self.pool_strategy, self.pool_verifier
        if self.kind == "vllm":
            cfg = self.endpoint().config()
            return [of(f"vllm/{cfg.model}", cfg, factor=self.endpoint().batch_price_factor)], "single", None
        return [EstimateMember("offline", "offline", kind="offline")], "single", None

    def build(self, knowledge: Knowledge, lake: Lake,
              batch: Optional["BatchSettings"] = None) -> "Annotator | AnnotatorPool":
        """The annotator of the run; ``batch``: VLLM endpoints buy every round and verification
        through the OpenAI Batch API (the offline models have nothing to batch)."""
        if self.kind == "offline":
            return self._offline(knowledge)
        if self.kind == "vllm":
            ann = self.endpoint().annotator(knowledge, lake)
            return ann if batch is None else self.endpoint().batch_annotator(ann, lake, batch)
        if self.kind == "pool":
            return self.build_pool(knowledge, lake, batch)
        raise ValueError(f"unknown annotator kind {self.kind!r}: use offline, vllm or pool")
