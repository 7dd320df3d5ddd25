"""The planner: recipe + target -> an ordered, type-checked chain of passes, before any work starts.

A pass whose work depends on the target (export, optimize, quantize) resolves here, through `for_target`:
the planned step carries the backend's own settings, or the plan leaves the step out with a note (optimize
on openvino). Notes also name deprecated recipe and pass names; the build prints them with the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hfexport.artifacts import ARTIFACT_KINDS, TorchModel
from hfexport.context import PlanContext
from hfexport.errors import PlanError
from hfexport.passes import Pass, get_pass
from hfexport.recipes import pass_configs
from hfexport.tasks import get_task


@runtime_checkable
class TargetDependent(Protocol):
    def for_target(self, plan: PlanContext) -> Pass | str:
        """This step as the target runs it (its backend's settings filled in), or why the target leaves it out."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[Pass, ...]
    context: PlanContext
    notes: tuple[str, ...] = ()  # one line each: steps left out, deprecated names

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
    notes = [recipe.deprecation] if recipe.deprecation else []
    produced: type = TorchModel
    previous = "the loaded model"
    for index, (pass_type, config) in enumerate(pass_configs(recipe)):
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
            planned = step.for_target(ctx) if isinstance(step, TargetDependent) else step
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from exc
        if isinstance(planned, str):
            notes.append(f"passes.{index} ({pass_type}) {planned}")
            continue
        if getattr(planned, "deprecation", None):
            notes.append(f"passes.{index}: {planned.deprecation}")
        steps.append(planned)
        produced, previous = planned.output_kind(produced), f"passes.{index} ({pass_type})"
    final = ARTIFACT_KINDS.get(target.artifact)
    if produced is not final:
        raise PlanError(
            f"recipe {recipe.name!r} ends with a {produced.kind} model but target {target.name!r} deploys "
            f"{target.artifact}; add an export step for it"
        )
    return Plan(tuple(steps), ctx, tuple(notes))
