"""quantize: lower precision. The recipe says the intent (`precision` int8, int4 or fp16; `weights_only`;
`group_size`); the target decides how.

The target profile's `quantize:` section fills every option the recipe leaves unset (e.g. int8 is dynamic
MatMul int8 on cpu, NNCF post-training with SmoothQuant 0.8 on openvino; an LLM's int4 keeps its LM head in
int8), and the target's backend picks the scheme that runs it (hfexport/backends/: ONNX Runtime's dynamic or
static int8, MatMulNBits weight-only, the fp16 converter; NNCF post-training or weight compression).

`weights_only` means the same on every backend: weights in low bits, activations stay float. Options that
only one backend reads are refused on the others by the planner, naming the field.
"""

from __future__ import annotations

from typing import Any

import pydantic

from hfexport._yaml import format_validation_error
from hfexport.artifacts import ARTIFACT_KINDS, Artifact, TorchModel
from hfexport.backends import all_backends, get_backend
from hfexport.backends.options import QuantizeConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes._stats import graph_stats_parts
from hfexport.passes.base import Pass
from hfexport.profiles import TargetProfile
from hfexport.tasks import get_task

__all__ = ["QuantizeConfig", "QuantizePass", "with_target_defaults"]

# Options of weight-only quantisation on every backend (MatMulNBits, NNCF compress_weights); int4_top1_target
# is held to weights_only by QuantizeConfig's own validator.
_WEIGHT_ONLY = ("lm_head_precision", "embedding_precision", "accuracy_level")


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    summary = "int8, int4 or fp16, done the target's way: ONNX Runtime (int8, MatMulNBits, fp16) or NNCF"
    # Any backend's exported model: the backend decides what the step does to it.
    consumes = tuple(kind for kind in ARTIFACT_KINDS.values() if kind is not TorchModel)
    produces = None
    config_class = QuantizeConfig
    data_inputs = frozenset({"calibration_texts"})

    def __init__(self, config: QuantizeConfig, settings: Any = None):
        super().__init__(config)
        # The backend's scheme, every value effective; set by planning (see for_target).
        self.settings = settings

    def describe(self) -> str:
        return self.settings.describe() if self.settings is not None else self.config.describe()

    def check(self, plan: PlanContext) -> None:
        target, config = plan.target, self.config
        allowed = target.weight_only_precisions if config.weights_only else target.precisions
        if config.precision not in allowed:
            listing = "weight_only_precisions" if config.weights_only else "precisions"
            raise PlanError(f"precision {config.precision!r}{' with weights_only' if config.weights_only else ''} "
                            f"is not supported by target {target.name!r} ({listing}: {', '.join(allowed) or 'none'})")
        backend = get_backend(target.backend)
        explicit = set(config.model_fields_set)
        backend.refuse_foreign_options(explicit, plan, [b for b in all_backends() if b is not backend])
        stray = [name for name in _WEIGHT_ONLY if name in explicit]
        if stray and not config.weights_only:
            raise PlanError(f"{stray[0]} applies to weight-only quantisation; add weights_only: true or remove it")
        generative = get_task(plan.source.task).generative
        config = with_target_defaults(config, target, generative)
        backend.check_quantize(config, plan)
        if generative and config.mode == "static":
            # Calibration feeds carry no KV cache; the generation graphs need one.
            raise PlanError(f"mode: static does not calibrate {plan.source.task} graphs; use weights_only: true")
        if config.mode == "static" and not plan.has_calibration_data:
            raise PlanError("mode: static needs calibration data (--calibration-data)")
        if config.int4_top1_target is not None:
            if not generative:
                raise PlanError(f"int4_top1_target measures next-token agreement, so it needs a text-generation "
                                f"model (this one is {plan.source.task}); remove it")
            if not plan.has_calibration_data:
                raise PlanError("int4_top1_target measures on calibration text: give --calibration-data")

    def for_target(self, plan: PlanContext) -> QuantizePass:
        """This step with the target's defaults filled in and its backend's scheme chosen."""
        config = with_target_defaults(self.config, plan.target, get_task(plan.source.task).generative)
        return QuantizePass(config, get_backend(plan.target.backend).quantize_settings(config, plan))

    def run(self, artifact: Artifact, ctx: BuildContext) -> Artifact:
        backend = get_backend(ctx.target.backend)
        settings = self.settings
        if settings is None:
            config = with_target_defaults(self.config, ctx.target, get_task(ctx.source.task).generative)
            settings = backend.quantize_settings(config, ctx)
        return backend.quantize(settings, artifact, ctx, ctx.stage_dir(self.name))

    def stats_parts(self, stats: dict) -> list[str]:
        return graph_stats_parts(stats)


def with_target_defaults(config: QuantizeConfig, target: TargetProfile, generative: bool) -> QuantizeConfig:
    """`config` with every option it leaves unset taken from the target's `quantize:` section, if it has one."""
    explicit = config.model_dump(exclude_unset=True)
    defaults = target.quantize.defaults(config.precision, config.weights_only, generative, explicit) \
        if target.quantize is not None else {}
    if not set(defaults) - set(explicit):
        return config
    try:
        return QuantizeConfig.model_validate({**defaults, **explicit})
    except pydantic.ValidationError as exc:
        raise PlanError(format_validation_error(f"quantize with target {target.name!r}'s defaults", exc)) from exc
