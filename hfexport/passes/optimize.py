"""optimize: the backend's build-time graph optimisation.

On onnxruntime targets: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu, ...),
contrib ops that run on ONNX Runtime only, which is what those targets deploy. On openvino targets the plan
leaves the step out and notes why: OpenVINO fuses when it compiles the model for its device, at load.
"""

from __future__ import annotations

from hfexport.artifacts import ARTIFACT_KINDS, Artifact, TorchModel
from hfexport.backends import get_backend
from hfexport.backends.options import OptimizeConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.passes._stats import graph_stats_parts
from hfexport.passes.base import Pass

__all__ = ["OptimizeConfig", "OptimizePass"]


class OptimizePass(Pass[OptimizeConfig]):
    name = "optimize"
    summary = "the backend's graph optimisation: ONNX Runtime transformer fusions (OpenVINO fuses at load)"
    # Any backend's exported model: the backend decides what the step does to it.
    consumes = tuple(kind for kind in ARTIFACT_KINDS.values() if kind is not TorchModel)
    produces = None
    config_class = OptimizeConfig
    data_inputs = frozenset()

    def check(self, plan: PlanContext) -> None:
        get_backend(plan.target.backend).check_optimize(self.config, plan)

    def for_target(self, plan: PlanContext) -> OptimizePass | str:
        """This step, or why the target's backend has nothing to do for it (the plan leaves it out)."""
        skipped = get_backend(plan.target.backend).optimize_skipped
        return f"left out on target {plan.target.name!r}: {skipped}" if skipped else self

    def run(self, artifact: Artifact, ctx: BuildContext) -> Artifact:
        return get_backend(ctx.target.backend).optimize(self.config, artifact, ctx, ctx.stage_dir(self.name))

    def stats_parts(self, stats: dict) -> list[str]:
        return graph_stats_parts(stats)
