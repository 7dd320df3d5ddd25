"""Targets and recipes: every shipped file loads and round-trips; mistakes name the file and field."""

from __future__ import annotations

import json

import pytest
import yaml

from hfexport._shipped import list_shipped
from hfexport._yaml import dump_model, validate_mapping
from hfexport.errors import ConfigError
from hfexport.profiles import TargetProfile, load_target
from hfexport.recipes import Recipe, load_recipe, pass_configs


@pytest.mark.parametrize("path", list_shipped("targets"), ids=lambda p: p.name)
def test_shipped_target_loads_and_round_trips(path):
    profile = load_target(str(path))
    again = validate_mapping("round-trip", yaml.safe_load(dump_model(profile)), TargetProfile)
    assert again == profile


@pytest.mark.parametrize("path", list_shipped("recipes"), ids=lambda p: p.name)
def test_shipped_recipe_loads_and_round_trips(path):
    recipe = load_recipe(str(path))
    again = validate_mapping("round-trip", yaml.safe_load(dump_model(recipe)), Recipe)
    assert again == recipe
    assert [c for _, c in pass_configs(again)] == [c for _, c in pass_configs(recipe)]


def test_load_target_by_name_and_unknown_name():
    assert load_target("cpu").backend == "onnxruntime"
    with pytest.raises(ConfigError, match="unknown target 'nope'.*known: .*cpu"):
        load_target("nope")


def test_target_unknown_key_names_file_and_field(tmp_path):
    path = tmp_path / "mine.yaml"
    text = (list_shipped("targets")[0]).read_text().replace("opset: 17", "opset: 17\nopsett: 18")
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_target(str(path))
    assert str(path) in str(caught.value) and "opsett" in str(caught.value) and "unknown key" in str(caught.value)


def test_target_bad_value_names_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("schema_version: 1\nbackend: tensorflow\nprecisions: [fp32]\n")
    with pytest.raises(ConfigError, match="backend"):
        load_target(str(path))


def test_target_quant_preset_follows_isa(tmp_path):
    text = list_shipped("targets")[0].read_text().replace("isa: auto", "isa: avx2")
    path = tmp_path / "avx2.yaml"
    path.write_text(text)
    profile = load_target(str(path))
    preset = profile.quant_preset()
    assert preset.isa == "avx2" and preset.reduce_range is True
    assert profile.effective_isa() == "avx2"  # an explicit ISA is kept, whatever this host has


def test_recipe_misspelt_pass_parameter_names_pass_and_field(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("schema_version: 1\npasses:\n  - type: export_onnx\n  - type: quantize\n    per_chanel: true\n")
    with pytest.raises(ConfigError) as caught:
        load_recipe(str(path))
    message = str(caught.value)
    assert str(path) in message and "passes.1(quantize)" in message and "per_chanel" in message


def test_recipe_unknown_pass_type(tmp_path):
    path = tmp_path / "unknown.yaml"
    path.write_text("schema_version: 1\npasses:\n  - type: sparsify\n")
    with pytest.raises(ConfigError, match="unknown pass type 'sparsify'"):
        load_recipe(str(path))


def test_recipe_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("passes:\n  - type: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(str(path))


def test_recipe_built_in_python_equals_yaml():
    from hfexport.recipes import PassSpec

    recipe = Recipe(name="default", description=load_recipe("default").description, targets=["cpu", "openvino"],
                    passes=[PassSpec(type="export"), PassSpec(type="optimize"),
                            PassSpec(type="quantize", precision="int8")])
    assert pass_configs(recipe) == pass_configs(load_recipe("default"))


# -- target-agnostic recipes: what each plans on each target it claims, and the names of the last release ------

def _plan_recipe(recipe, target: str, tiny_model, tiny_llm):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan

    model = tiny_llm("llama") if recipe.name.startswith("llm-") else tiny_model()
    return make_plan(PlanContext(load_target(target), recipe, resolve_model(str(model))))


@pytest.mark.parametrize(("name", "target"), [(path.stem, target) for path in list_shipped("recipes")
                                              for target in load_recipe(str(path)).targets])
def test_shipped_recipe_plans_on_every_target_it_claims(name, target, tiny_model, tiny_llm):
    plan = _plan_recipe(load_recipe(name), target, tiny_model, tiny_llm)
    assert plan.steps and not any("deprecated" in note for note in plan.notes)


@pytest.mark.parametrize("path", list_shipped("recipes"), ids=lambda p: p.name)
def test_shipped_recipe_claims_shipped_targets_only(path):
    claimed = load_recipe(str(path)).targets
    assert claimed and set(claimed) <= {target.stem for target in list_shipped("targets")}


def test_targets_default_recipes_are_shipped_names():
    shipped = {path.stem for path in list_shipped("recipes")}
    for path in list_shipped("targets"):
        target = load_target(str(path))
        for recipe in (target.default_recipe, *target.task_recipes.values()):
            assert recipe in shipped and target.name in load_recipe(recipe).targets


# The last release's recipes, planned on the target each was written for (by the code before backends became
# modules): every export/optimize step's options and every quantiser's effective settings. ISA-dependent int8
# values (per_channel, reduce_range, weight and activation types) come from the target's preset on both sides.
_ONNX = ("export_onnx", {"exporter": "torchscript", "opset": None, "tolerance": 0.001})
_ONNX_LLM = ("export_onnx_generation", {"opset": None, "check_tokens": 8, "graph": "auto"})
_OV = ("export_openvino", {"compress_to_fp16": False, "tolerance": 0.001})
_OV_LLM = ("export_openvino_generation", {"stateful": True, "compress_to_fp16": False, "check_tokens": 8})
_FUSE = ("optimize", {"fusions": True, "model_type": None, "level": 0, "attention": "fused"})


def _int8(mode="dynamic", op_types=("MatMul",)):
    # The cpu target stores the weights a dynamic graph leaves in float as int8 (decision 0185); static keeps fp32.
    return ("Int8Settings", {"mode": mode, "op_types": list(op_types), "exclude_nodes": [],
                             "calibration_method": "minmax", "calibration_samples": 100,
                             "symmetric_activations": False, "float_fallback": 0,
                             "float_weight_storage": "int8" if mode == "dynamic" else "fp32",
                             "attention_int8": "auto" if mode == "dynamic" else False, "smooth_quant_alpha": 0.5,
                             "precision": "int8"})


def _matmul_nbits(precision, group, lm_head, embedding, search=None, symmetric=False):
    return ("WeightOnlySettings", {"precision": precision, "group_size": group, "lm_head_precision": lm_head,
                                   "embedding_precision": embedding, "accuracy_level": 4, "exclude_nodes": [],
                                   "int4_top1_target": search, "symmetric_weights": symmetric})


def _nncf_weights(precision, group=128, ratio=1.0, lm_head=None, embedding=None, check=None, computes=None):
    return ("WeightCompressionSettings", {"precision": precision, "group_size": group, "ratio": ratio,
                                          "lm_head_precision": lm_head, "embedding_precision": embedding,
                                          "exclude_nodes": [], "weights_only": True, "int4_top1_target": check,
                                          "inference_precision": computes})


_FP16 = ("Float16Settings", {"exclude_nodes": [], "precision": "fp16"})
_NNCF_PTQ = ("PostTrainingSettings", {"calibration_samples": 300, "smooth_quant_alpha": 0.8,
                                      "symmetric_activations": False, "exclude_nodes": [], "inference_precision": None,
                                      "precision": "int8"})
_LLM_EVAL = {"samples": 32, "latency_runs": 10, "sequence_length": 16, "generation_tokens": 32}

OLD_RECIPES = {  # name: (target, [(step or scheme, settings)], gates set, new name)
    "default": ("cpu", [_ONNX, _FUSE, _int8()], {}, "default"),
    "int8": ("cpu", [_ONNX, _FUSE, _int8()], {}, "default"),
    "fp32": ("cpu", [_ONNX, _FUSE], {}, "fp32"),
    "int8-small": ("cpu", [_ONNX, _FUSE, _int8(op_types=("MatMul", "EmbedLayerNormalization", "Gather"))], {},
                   "int8-small"),
    "int8-static": ("cpu", [_ONNX, _FUSE, _int8(mode="static")], {}, "int8-static"),
    "distill-prune-int8": ("cpu", [("prune", None), ("distill", None), _ONNX,
                                   ("optimize", {**_FUSE[1], "attention": "unfused_projections"}), _int8()],
                           {"cosine_mean": 0.9, "cosine_min": 0.6}, "distill-prune-int8"),
    "llm-fp32": ("cpu", [_ONNX_LLM], {"top1_agreement": 0.99, "greedy_agreement": 1.0}, "llm-fp32"),
    # decision 0192: the LM head an int4 candidate, symmetric blocks
    "llm-int4": ("cpu", [_ONNX_LLM, _matmul_nbits("int4", 32, "int4", "int4", search=0.93, symmetric=True)],
                 {"top1_agreement": 0.9}, "llm-int4"),
    "llm-int8": ("cpu", [_ONNX_LLM, _matmul_nbits("int8", 128, "int8", "fp32")], {"top1_agreement": 0.9}, "llm-int8"),
    "cuda-fp16": ("cuda", [_ONNX, _FUSE, _FP16], {}, "fp16"),
    "cuda-llm-fp16": ("cuda", [_ONNX_LLM, _FP16], {"top1_agreement": 0.9}, "llm-fp16"),
    "openvino-default": ("openvino", [_OV, _NNCF_PTQ], {}, "default"),
    "openvino-fp32": ("openvino", [_OV], {}, "fp32"),
    "openvino-int4": ("openvino", [_OV, _nncf_weights("int4", ratio=0.8)], {}, "int4"),
    "openvino-int8-weights": ("openvino", [_OV, _nncf_weights("int8")], {}, "int8-weights"),
    "openvino-llm-fp32": ("openvino", [_OV_LLM], {"top1_agreement": 0.99, "greedy_agreement": 1.0}, "llm-fp32"),
    # decision 0193: the LM head int4 while top-1 on calibration text holds; 0197: bf16 where the CPU has it
    "openvino-llm-int4": ("openvino", [_OV_LLM, _nncf_weights("int4", 32, lm_head="int4", embedding="int8",
                                                              check=0.93, computes="auto")],
                          {"top1_agreement": 0.9}, "llm-int4"),
    "openvino-llm-int8": ("openvino", [_OV_LLM, _nncf_weights("int8", lm_head="int8", embedding="int8")],
                          {"top1_agreement": 0.9}, "llm-int8"),
}


def _effective(step, target) -> tuple:
    """(the old step name or the quantiser scheme, its effective settings) of one planned step."""
    import dataclasses

    if step.name == "quantize":
        settings = json.loads(json.dumps(dataclasses.asdict(step.settings)))
        if type(step.settings).__name__ == "Int8Settings":
            preset = target.quant_preset()
            want = {"per_channel": preset.per_channel, "reduce_range": preset.reduce_range,
                    "weight_type": preset.weight_type, "activation_type": preset.activation_type, "isa": preset.isa}
            assert {k: settings.pop(k) for k in want} == want
        return type(step.settings).__name__, settings
    if step.name == "export":
        old = {("onnx", False): _ONNX, ("onnx", True): _ONNX_LLM, ("openvino", False): _OV,
               ("openvino", True): _OV_LLM}[step.backend.artifact.kind, step.generative][0]
        return old, step.config.model_dump(mode="json")
    if step.name in ("prune", "distill"):
        return step.name, None
    return step.name, step.config.model_dump(mode="json")


@pytest.mark.parametrize("old", sorted(OLD_RECIPES))
def test_old_recipe_name_plans_the_same_steps_and_settings_on_its_target(old, tiny_model, tiny_llm):
    from hfexport.recipes import RECIPE_ALIASES

    target_name, steps, gates, new = OLD_RECIPES[old]
    recipe = load_recipe(old)
    assert recipe.name == new and RECIPE_ALIASES.get(old, old) == new
    plan = _plan_recipe(recipe, target_name, tiny_model, tiny_llm)
    assert [_effective(step, plan.context.target) for step in plan.steps] == steps
    assert {k: v for k, v in recipe.gates.model_dump().items() if v is not None} == gates
    assert recipe.evaluation.mode == "full"  # --validation quick is asked for at build time
    assert recipe.evaluation.model_dump(exclude={"memory", "batch_size", "mode"}) == (
        _LLM_EVAL if new.startswith("llm-") else {"samples": 256, "latency_runs": 50, "sequence_length": 128,
                                                  "generation_tokens": 32})
    if old != new:  # a renamed recipe says so, once, naming the new name
        assert plan.notes[0] == (f"recipe {old!r} is now {new!r} (recipes no longer name the target); "
                                 f"the old name goes in the next release")
    else:
        assert recipe.deprecation is None


def test_recipe_alias_list_is_every_renamed_recipe():
    from hfexport.recipes import RECIPE_ALIASES

    shipped = {path.stem for path in list_shipped("recipes")}
    assert set(RECIPE_ALIASES.values()) <= shipped and not set(RECIPE_ALIASES) & shipped
    assert {old for old, (_, _, _, new) in OLD_RECIPES.items() if old != new} == set(RECIPE_ALIASES)


# -- the `quantize:` section of a target: typed by its backend -----------------------------------------------


def test_target_quantize_section_takes_its_backends_options_only(tmp_path):
    text = (list_shipped("targets")[0]).read_text()  # cpu: onnxruntime
    assert text.count("    mode: dynamic") == 1
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("    mode: dynamic", "    ratio: 0.8\n    mode: dynamic"))
    with pytest.raises(ConfigError, match=r"quantize.onnxruntime.int8.ratio: unknown key"):
        load_target(str(wrong))


def test_target_quantize_section_fields_are_quantize_options():
    from hfexport.backends.options import QuantizeConfig
    from hfexport.profiles import QUANTIZE_SECTIONS

    for section in QUANTIZE_SECTIONS.values():
        for name in ("int8", "weights_only", "llm"):
            annotation = section.model_fields[name].annotation
            model = annotation if name == "int8" else annotation.__args__[1]
            assert set(model.model_fields) <= set(QuantizeConfig.model_fields), (section, name)


def test_recipe_option_overrides_the_targets_default(tiny_llm):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.recipes import PassSpec

    recipe = Recipe(name="t", passes=[PassSpec(type="export"),
                                      PassSpec(type="quantize", precision="int4", weights_only=True,
                                               embedding_precision="int8", int4_top1_target=None)])
    plan = make_plan(PlanContext(load_target("cpu"), recipe, resolve_model(str(tiny_llm("llama")))))
    settings = plan.steps[-1].settings
    # Set by the recipe: the embedding table and no search; left open: the cpu target's group and LM head.
    assert (settings.embedding_precision, settings.int4_top1_target) == ("int8", None)
    assert (settings.group_size, settings.lm_head_precision, settings.symmetric_weights) == (32, "int4", True)
