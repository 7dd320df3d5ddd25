"""The Pass contract: a frozen, typed config plus a class that turns one artifact into a new one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from hfexport.artifacts import Artifact

if TYPE_CHECKING:
    from hfexport.context import BuildContext, PlanContext


class PassConfig(BaseModel):
    """Parameters of one pass. Unknown keys are errors, so a typo in a recipe never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=PassConfig)


class Pass(ABC, Generic[C]):
    name: ClassVar[str]
    # The artifact kinds this pass accepts; `produces = None` means "the same kind it was given"
    # (a quantiser that works on ONNX and OpenVINO models alike).
    consumes: ClassVar[type[Artifact] | tuple[type[Artifact], ...]]
    produces: ClassVar[type[Artifact] | None]
    config_class: ClassVar[type[PassConfig]]
    # One line for `hfexport recipes` and docs.
    summary: ClassVar[str] = ""
    # The BuildContext texts this pass reads ("calibration_texts", "train_texts"): the stage cache keys
    # on their hashes. The default assumes both; a pass that reads neither (an export) declares none,
    # so new calibration data does not invalidate it.
    data_inputs: ClassVar[frozenset[str]] = frozenset({"calibration_texts", "train_texts"})
    # True for a pass that trains on --train-data: without --eval-data, the build then holds out a split of
    # that text (never trained on) and judges the gates there.
    trains: ClassVar[bool] = False

    def __init__(self, config: C):
        self.config = config

    @classmethod
    def accepted_kinds(cls) -> tuple[type[Artifact], ...]:
        return cls.consumes if isinstance(cls.consumes, tuple) else (cls.consumes,)

    @classmethod
    def output_kind(cls, given: type[Artifact]) -> type[Artifact]:
        return cls.produces or given

    def check(self, plan: PlanContext) -> None:
        """Cross-check against the target and inputs before any work; raise PlanError naming the field."""

    @abstractmethod
    def run(self, artifact: Artifact, ctx: BuildContext) -> Artifact:
        """Write a new artifact under ctx.stage_dir(...); never modify the input artifact."""

    def describe(self) -> str:
        """A short label for progress lines, e.g. `quantize(int8, dynamic)`."""
        return self.name

    def stats_parts(self, stats: dict) -> list[str]:
        """This pass's facts for its progress line (after the size), e.g. `["350 -> 212 nodes"]`."""
        return []
