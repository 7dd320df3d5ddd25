"""The planner: recipe + target -> an ordered, type-checked chain of passes, before any work starts."""

from __future__ import annotations

from dataclasses import dataclass

from hfexport.artifacts import ARTIFACT_KINDS, TorchModel
from hfexport.context import PlanContext
from hfexport.errors import PlanError
from hfexport.passes import Pass, get_pass
from hfexport.tasks import get_task


@dataclass(frozen=True)
class Plan:
    steps: tuple[Pass, ...]
    context: PlanContext

    def describe(self) -> str:
        return " -> ".join(step.describe() for step in self.steps)


def make_plan(ctx: PlanContext) -> Plan:
    recipe, target = ctx.recipe, ctx.target
    task = get_task(ctx.source.task)
    foreign = task.foreign_gates(recipe.gates.model_dump())
    if foreign:
        raise PlanError(f"recipe {recipe.name!r}, gates.{foreign[0]}: {task.name} is not measured by "
                        f"{foreign[0]} (its gates: {', '.join(sorted(task.gate_metrics))}); remove it")
    steps: list[Pass] = []
    produced: type = TorchModel
    previous = "the loaded model"
    for index, (pass_type, config) in enumerate(recipe.pass_configs()):
        cls = get_pass(pass_type)
        where = f"recipe {recipe.name!r}, passes.{index} ({pass_type})"
        accepted = cls.accepted_kinds()
        if produced not in accepted:
            # Name the kind this target works in when the pass takes it (quantize takes onnx or openvino).
            named = [kind for kind in accepted if kind.kind == target.artifact] or accepted
            kinds = " or ".join(kind.kind for kind in named)
            raise PlanError(
                f"{where}: takes a {kinds} model but {previous} gives a {produced.kind} model; "
                f"reorder the passes or add the missing step"
            )
        step = cls(config)
        try:
            step.check(ctx)
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from exc
        steps.append(step)
        produced, previous = cls.output_kind(produced), f"passes.{index} ({pass_type})"
    final = ARTIFACT_KINDS.get(target.artifact)
    if produced is not final:
        raise PlanError(
            f"recipe {recipe.name!r} ends with a {produced.kind} model but target {target.name!r} deploys "
            f"{target.artifact}; add an export step for it"
        )
    return Plan(tuple(steps), ctx)
