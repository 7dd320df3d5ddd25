"""Targets and recipes: every shipped file loads and round-trips; mistakes name the file and field."""

from __future__ import annotations

import pytest
import yaml

from hfexport._shipped import list_shipped
from hfexport._yaml import dump_model, validate_mapping
from hfexport.errors import ConfigError
from hfexport.profiles import TargetProfile, load_target
from hfexport.recipes import Recipe, load_recipe


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
    assert [c for _, c in again.pass_configs()] == [c for _, c in recipe.pass_configs()]


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

    recipe = Recipe(name="default", description=load_recipe("default").description,
                    passes=[PassSpec(type="export_onnx"), PassSpec(type="optimize"),
                            PassSpec(type="quantize", precision="int8", mode="dynamic", op_types=["MatMul"])])
    assert recipe.pass_configs() == load_recipe("default").pass_configs()
