"""The xla backend (target tpu): jax.export modules (StableHLO) for TPUs, NVIDIA GPUs and CPUs, run by jax.

- export: torch.export -> torchax -> jax.export (`_xla/export.py`), weights as arguments saved as safetensors;
  fp32, or bf16 (the TPU's numerics; the tpu target's default recipe) as the export's `precision` says. Options:
  `ExportXlaConfig`. Text generation: one function over a static KV cache (`_xla/generation.py`), fp32,
  checked by greedy decoding against PyTorch (`ExportXlaGenerationConfig`).
- optimize: nothing at build time. XLA fuses when it compiles the module for the device, at load; the plan
  leaves the step out and says so.
- quantize: none. Lower precision on this backend is the export's bf16; int8 and int4 are refused at plan time.
- profile section: `XlaOptions` in hfexport/profiles.py (platforms, device, precision, buckets, compile check).

NOTE: torch-xla is not the route: its last release does not import beside torch 2.13
(docs/decisions/0100-xla-export-route.md).
"""

from __future__ import annotations

from pathlib import Path

from hfexport.artifacts import Artifact, StableHLOModel, TorchModel
from hfexport.backends._xla import export as xla_export
from hfexport.backends._xla import generation as xla_generation
from hfexport.backends.base import Backend
from hfexport.backends.options import QuantizeConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import PassConfig


class XlaBackend(Backend):
    name = "xla"
    title = "XLA"
    quantizer = "XLA"
    artifact = StableHLOModel
    optimize_skipped = "XLA fuses the module when it compiles it for the device, so there is nothing to do at build time"
    modalities = frozenset({"text"})  # the export traces token inputs only (an image task: not built yet)

    def export_config_class(self, generative: bool) -> type[PassConfig]:
        return xla_generation.ExportXlaGenerationConfig if generative else xla_export.ExportXlaConfig

    def export(self, config, generative: bool, artifact: TorchModel, ctx: BuildContext,
               out_dir: Path) -> StableHLOModel:
        if generative:
            return xla_generation.export_generation(config, artifact, ctx, out_dir)
        return xla_export.export_encoder(config, artifact, ctx, out_dir)

    def check_quantize(self, config: QuantizeConfig, plan: PlanContext) -> None:
        raise PlanError(f"quantize: target {plan.target.name!r} (xla) has no quantiser; its lower precision is "
                        f"the export's bf16 (--recipe bf16) - remove the quantize step")

    def quantize_settings(self, config: QuantizeConfig, plan: PlanContext | BuildContext):
        raise PlanError("the xla backend has no quantiser")

    def quantize(self, settings, artifact: Artifact, ctx: BuildContext, out_dir: Path) -> Artifact:
        raise PlanError("the xla backend has no quantiser")
