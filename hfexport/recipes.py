"""Recipes: an ordered chain of pass specs plus fidelity gates (recipes/*.yaml).

A recipe names *what* to do; the target decides *how*: `--recipe int8` is int8 on cpu and on openvino.
Pass parameters are validated against each pass's own config model, found through the registry, so
plugin passes get the same checks. A recipe lists the shipped targets it is written for (`targets`);
the tests plan each shipped recipe on each of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from hfexport._shipped import list_shipped, resolve_named_yaml
from hfexport._yaml import format_validation_error, load_model_file
from hfexport.errors import ConfigError
from hfexport.passes import PassConfig, get_pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassSpec(BaseModel):
    """`type` picks the pass; every other key is that pass's parameter."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build_config(self, where: str = "") -> PassConfig:
        cls = get_pass(self.type)
        try:
            return cls.config_class.model_validate(self.params())
        except pydantic.ValidationError as exc:
            raise ConfigError(format_validation_error(where or f"pass {self.type}", exc)) from exc


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


class Evaluation(_Strict):
    samples: int = Field(256, ge=8, description="held-out evaluation texts for fidelity")
    batch_size: int = Field(32, ge=1, description="batch for the throughput figure")
    latency_runs: int = Field(50, ge=5, description="timed batch-1 runs per side (median and p90 reported)")
    sequence_length: int = Field(128, ge=8, description="tokens per text for latency and throughput")
    memory: bool = Field(True, description="peak RSS per stage, each in a fresh process (a few seconds each)")
    generation_tokens: int = Field(32, ge=2, description="text generation: new tokens per greedy check and timing")


# Recipe names of the last release that name a target: old name -> the recipe that now means the same on it.
# NOTE: kept for one release; each resolves with a one-line deprecation note in the plan.
RECIPE_ALIASES: dict[str, str] = {
    "int8": "default",
    "openvino-default": "default",
    "openvino-fp32": "fp32",
    "openvino-int4": "int4",
    "openvino-int8-weights": "int8-weights",
    "openvino-llm-fp32": "llm-fp32",
    "openvino-llm-int4": "llm-int4",
    "openvino-llm-int8": "llm-int8",
    "cuda-fp16": "fp16",
    "cuda-llm-fp16": "llm-fp16",
}


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

    @model_validator(mode="after")
    def _validate_pass_params(self) -> Recipe:
        for index, spec in enumerate(self.passes):
            spec.build_config(where=f"passes.{index}({spec.type})")
        return self

    def pass_configs(self) -> list[tuple[str, PassConfig]]:
        return [(spec.type, spec.build_config(f"passes.{i}({spec.type})")) for i, spec in enumerate(self.passes)]


def load_recipe(name_or_path: str | Path) -> Recipe:
    name = str(name_or_path)
    path = resolve_named_yaml("recipes", RECIPE_ALIASES.get(name, name))
    try:
        recipe = load_model_file(path, Recipe)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if str(path) in message else f"{path}: {message}") from exc
    if name in RECIPE_ALIASES:
        recipe._deprecation = (f"recipe {name!r} is now {recipe.name!r} (recipes no longer name the target); "
                               f"the old name goes in the next release")
    return recipe


def list_recipes() -> list[Recipe]:
    return [load_model_file(path, Recipe) for path in list_shipped("recipes")]
