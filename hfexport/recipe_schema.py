"""The recipe schema: an ordered chain of pass specs plus fidelity gates and evaluation settings.

Plain data, apart from the pass registry: the loader (hfexport/recipes.py) and the planner check each
pass's parameters against that pass's own config model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassSpec(BaseModel):
    """`type` picks the pass; every other key is that pass's parameter."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Gates(_Strict):
    """Fidelity thresholds; a final artifact below any of them produces no bundle.

    Unset values take the task's defaults (each task's `default_gates`, hfexport/tasks/).
    """

    cosine_mean: float | None = Field(None, ge=-1, le=1)
    cosine_min: float | None = Field(None, ge=-1, le=1)
    top1_agreement: float | None = Field(None, ge=0, le=1)
    token_agreement: float | None = Field(None, ge=0, le=1)
    span_agreement: float | None = Field(None, ge=0, le=1)
    top5_overlap: float | None = Field(None, ge=0, le=1)
    greedy_agreement: float | None = Field(None, ge=0, le=1)
    ctc_token_agreement: float | None = Field(None, ge=0, le=1)  # speech (CTC): decoded tokens kept
    frame_top1_agreement: float | None = Field(None, ge=0, le=1)


class Evaluation(_Strict):
    samples: int = Field(256, ge=8, description="held-out evaluation texts for fidelity")
    batch_size: int = Field(32, ge=1, description="batch for the throughput figure")
    latency_runs: int = Field(50, ge=5, description="timed batch-1 runs per side (median and p90 reported)")
    sequence_length: int = Field(128, ge=8, description="tokens per text for latency and throughput")
    memory: bool = Field(True, description="peak RSS per stage, each in a fresh process (a few seconds each)")
    generation_tokens: int = Field(32, ge=2, description="text generation: new tokens per greedy check and timing")
    mode: Literal["full", "quick"] = Field(
        "full", description="quick: `--validation quick`'s smaller evaluation (fewer texts and runs, no memory); "
        "the gates still apply, and the report's speed figures are marked as not a benchmark")

    def quick(self) -> Evaluation:
        """The quick evaluation for iteration: these settings capped at QUICK_EVALUATION, memory off."""
        capped = {k: min(getattr(self, k), cap) for k, cap in QUICK_EVALUATION.items()}
        return Evaluation(**{**self.model_dump(), **capped, "memory": False, "mode": "quick"})


# `--validation quick`: at most this many of each. NOTE: 128 held-out samples, not fewer: with 32 or 64 a
# top-1 gate near its threshold flipped against the full 256 (docs/decisions/0170); the time a quick
# validation saves is the timing runs and the fresh memory processes. 10 latency runs give a median, not a benchmark.
QUICK_EVALUATION = {"samples": 128, "latency_runs": 10, "generation_tokens": 16}


class Recipe(_Strict):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    targets: list[str] = Field(default_factory=list, description="the shipped targets it is written for")
    passes: list[PassSpec] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    _deprecation: str | None = PrivateAttr(None)

    @property
    def deprecation(self) -> str | None:
        """The note for a recipe asked for by its old name, or None."""
        return self._deprecation
