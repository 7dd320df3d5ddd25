"""Recipes: an ordered chain of pass specs plus fidelity gates (recipes/*.yaml).

A recipe names *what* to do; the target decides *how*: `--recipe int8` is int8 on cpu and on openvino.
Pass parameters are validated against each pass's own config model, found through the registry, so
plugin passes get the same checks. A recipe lists the shipped targets it is written for (`targets`);
the tests plan each shipped recipe on each of them.
"""

from __future__ import annotations

from pathlib import Path

import pydantic

from hfexport._shipped import list_shipped, resolve_named_yaml
from hfexport._yaml import format_validation_error, load_model_file
from hfexport.errors import ConfigError
from hfexport.passes import PassConfig, get_pass
from hfexport.recipe_schema import Evaluation, Gates, PassSpec, Recipe

__all__ = ["RECIPE_ALIASES", "VALIDATION_MODES", "Evaluation", "Gates", "PassSpec", "Recipe", "list_recipes",
           "load_recipe", "pass_config", "pass_configs", "with_validation"]

# `hfexport build --validation`: full (the recipe's evaluation as written) or quick (Evaluation.quick()).
VALIDATION_MODES = ("full", "quick")


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



def pass_config(spec: PassSpec, where: str = "") -> PassConfig:
    """The pass's typed config from a recipe's pass spec; ConfigError naming the field on a bad value."""
    cls = get_pass(spec.type)
    try:
        return cls.config_class.model_validate(spec.params())
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(where or f"pass {spec.type}", exc)) from exc


def pass_configs(recipe: Recipe) -> list[tuple[str, PassConfig]]:
    return [(spec.type, pass_config(spec, f"passes.{i}({spec.type})")) for i, spec in enumerate(recipe.passes)]


def load_recipe(name_or_path: str | Path) -> Recipe:
    name = str(name_or_path)
    path = resolve_named_yaml("recipes", RECIPE_ALIASES.get(name, name))
    try:
        recipe = load_model_file(path, Recipe)
        pass_configs(recipe)  # every pass's parameters checked on load, not first at planning
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if str(path) in message else f"{path}: {message}") from exc
    if recipe.evaluation.mode == "quick":  # a recipe asking for quick validation gets its caps too
        recipe = with_validation(recipe, "quick")
    if name in RECIPE_ALIASES:
        recipe._deprecation = (f"recipe {name!r} is now {recipe.name!r} (recipes no longer name the target); "
                               f"the old name goes in the next release")
    return recipe


def list_recipes() -> list[Recipe]:
    return [load_recipe(path) for path in list_shipped("recipes")]


def with_validation(recipe: Recipe, mode: str | None) -> Recipe:
    """The recipe with its evaluation for `--validation MODE`: None or "full" keeps what the recipe says,
    "quick" caps it (Evaluation.quick); the stage cache ignores evaluation settings, so no stage reruns."""
    if mode in (None, "full"):
        return recipe
    if mode != "quick":
        raise ConfigError(f"--validation {mode!r}: choose one of {', '.join(VALIDATION_MODES)}")
    return recipe.model_copy(update={"evaluation": recipe.evaluation.quick()})
