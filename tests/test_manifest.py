"""The bundle format: one JSON Schema (shipped, generated from the build's pydantic model), the runtime's
stdlib reader checked against it, format versions (format 1 bundles still load, newer ones are refused)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from hfexport.build import manifest as build_manifest
from hfexport.errors import BundleIntegrityError
from hfexport.runtime import load
from hfexport.runtime import manifest as runtime_manifest
from hfexport.runtime.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SCHEMA_PATH,
    file_table,
    parse_manifest,
    read_manifest,
)
from tests.conftest import TORCH_BLOCKER

# -- one schema -----------------------------------------------------------------------------------------------


def test_manifest_schema_shipped_equals_the_pydantic_model():
    shipped = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert shipped == build_manifest.Manifest.model_json_schema(), \
        "the shipped schema is stale: run `python -m hfexport.build.manifest` and commit the file"


def test_manifest_schema_format_version_is_the_runtime_format():
    schema = build_manifest.json_schema()
    assert schema["properties"]["format_version"]["const"] == FORMAT_VERSION
    assert FORMAT_VERSION == max(runtime_manifest.READABLE_FORMATS)


def test_manifest_schema_ships_inside_the_package():
    from importlib.resources import files

    assert (files("hfexport.runtime") / "manifest.schema.json").is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'packages = ["hfexport"]' in pyproject  # hatch puts every non-ignored file of the package in the wheel


def _schema_type(node: dict, defs: dict) -> str:
    """A JSON Schema node as the Python annotation the runtime dataclasses spell it with."""
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[1]
    if "anyOf" in node:
        return " | ".join(_schema_type(option, defs) for option in node["anyOf"])
    if "const" in node or "enum" in node:
        return {"integer": "int", "string": "str"}[node["type"]]
    kind = node.get("type")
    if kind == "array":
        return f"list[{_schema_type(node['items'], defs)}]"
    if kind == "object":
        extra = node.get("additionalProperties", True)
        return f"dict[str, {'Any' if extra is True else _schema_type(extra, defs)}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None",
            None: "Any"}[kind]


def _python_type(hint) -> str:
    if hint is typing.Any:
        return "Any"
    if hint is type(None):
        return "None"
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_python_type(a) for a in args)}]"
    if args:  # a union
        return " | ".join(_python_type(a) for a in args)
    return hint.__name__


def test_runtime_dataclasses_match_the_schema_field_by_field():
    import dataclasses

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    definitions = {**schema["$defs"], "Manifest": schema}
    for name, definition in definitions.items():
        cls = getattr(runtime_manifest, name)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert list(fields) == list(definition["properties"]), name
        required = {n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        assert required == set(definition.get("required", [])), name
        hints = typing.get_type_hints(cls)
        for field_name, node in definition["properties"].items():
            assert _python_type(hints[field_name]) == _schema_type(node, schema["$defs"]), f"{name}.{field_name}"
            if "default" in node:
                assert fields[field_name].default == node["default"], f"{name}.{field_name}"
    # Every section of the schema has its dataclass, and no dataclass is left out of the schema.
    sections = {n for n, v in vars(runtime_manifest).items()
                if dataclasses.is_dataclass(v) and v.__module__ == runtime_manifest.__name__}
    assert sections == set(definitions)


# -- built manifests ---------------------------------------------------------------------------------------------


def test_built_manifest_validates_against_the_schema_and_reads_back_whole(built_bundle):
    bundle = built_bundle("bert", "feature-extraction")
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    # pydantic is the schema's validator here: the shipped schema is its output (first test), so a
    # separate JSON Schema library would check the same rules; see docs/decisions/0080.
    build_manifest.Manifest.model_validate(data)
    manifest = read_manifest(bundle)
    assert manifest.format_version == FORMAT_VERSION == data["format_version"]
    assert manifest.to_dict() == data  # the typed reader drops nothing the writer wrote
    assert manifest.model.task == "feature-extraction" and manifest.model.pooling.mode == "mean"
    assert all(isinstance(p.cached, bool) for p in manifest.passes)
    assert manifest.model_bytes() == sum(data["files"][name]["bytes"] for name in data["model_files"])


def test_build_result_and_predictor_carry_the_typed_manifest(built_bundle, tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build
    from hfexport.progress import Progress

    result = build(str(tiny_model("bert", "text-classification")), task="text-classification",
                   recipe=str(fast_recipe()), output=tmp_path / "b", progress=Progress("quiet"))
    assert isinstance(result.manifest, runtime_manifest.Manifest)
    predictor = load(result.bundle)
    assert predictor.manifest == result.manifest
    assert result.manifest.model.id2label == {"0": "negative", "1": "positive"}
    assert result.manifest.validation.passed and result.manifest.validation.report == "report/report.json"


def test_manifest_dict_style_reads_still_work_with_a_deprecation_warning(built_bundle):
    predictor = load(built_bundle("bert", "feature-extraction"))
    with pytest.warns(DeprecationWarning, match=r"read it as \.model"):
        model = predictor.manifest["model"]
    with pytest.warns(DeprecationWarning):
        assert model["task"] == "feature-extraction" and model.get("pooling")["mode"] == "mean"
    with pytest.raises(KeyError):
        predictor.manifest["nope"]  # noqa: B018


def test_write_manifest_refuses_a_field_outside_the_schema(tmp_path):
    from pydantic import ValidationError

    from hfexport.build.bundle import write_manifest

    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValidationError, match="tokeniser"):
        write_manifest(tmp_path, {"tokeniser": {}})
    assert not (tmp_path / MANIFEST_NAME).exists()


# -- versions ----------------------------------------------------------------------------------------------------


def _copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def _rewrite(bundle: Path, change) -> None:
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    change(data)
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))


def test_manifest_newer_format_refused_with_a_line_that_says_upgrade(built_bundle, tmp_path):
    copy = _copy(built_bundle("bert", "feature-extraction"), tmp_path / "copy")
    _rewrite(copy, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleIntegrityError) as error:
        load(copy)
    message = str(error.value)
    assert f"format {FORMAT_VERSION + 1} is not supported" in message and "upgrade hfexport" in message
    assert "\n" not in message


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m["model"].update(max_length="long"), "model.max_length should be an integer"),
    (lambda m: m["model"].pop("task"), "model.task is missing"),
    (lambda m: m["signature"]["inputs"][0].update(shape=[None]), "signature.inputs[0].shape[0]"),
    (lambda m: m.update(format_version="2"), "format '2' is not supported"),
    (lambda m: m["files"].update({"../outside": {"sha256": "0" * 64, "bytes": 1}}), "outside the bundle"),
])
def test_manifest_invalid_content_is_one_line_naming_the_field(built_bundle, tmp_path, change, expected):
    copy = _copy(built_bundle("bert", "feature-extraction"), tmp_path / "copy")
    _rewrite(copy, change)
    with pytest.raises(BundleIntegrityError, match=expected.replace("[", r"\[").replace("]", r"\]")) as error:
        load(copy)
    assert "\n" not in str(error.value)


def write_format_1(bundle: Path) -> None:
    """Rewrite a bundle's manifest.json exactly as hfexport 0.1 wrote format 1 and re-checksum it.

    The writer below is main's before the typed manifest (`git show 710b070~1:hfexport/api.py`,
    `_manifest_body`, and `:hfexport/bundle.py`, `write_manifest`), fed the values the bundle records
    instead of the build's objects (source, profile, recipe, the transformers tokenizer).
    """
    from transformers import AutoTokenizer

    recorded = json.loads((bundle / MANIFEST_NAME).read_text())
    config = json.loads((bundle / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(bundle / "tokenizer"))
    model, target, recipe = recorded["model"], recorded["target"], recorded["recipe"]
    body = {
        "model": {"id": model["id"], "revision": model["revision"], "task": model["task"],
                  "model_type": model["model_type"], "max_length": model["max_length"], "pooling": model["pooling"],
                  "id2label": config.get("id2label") if model["task"] != "feature-extraction" else None,
                  "problem_type": config.get("problem_type"),
                  "mask_token": tokenizer.mask_token, "mask_token_id": tokenizer.mask_token_id},
        "target": {"name": target["name"], "backend": target["backend"], "device": target["device"],
                   "execution_providers": target["execution_providers"], "isa": target["isa"],
                   "precision": target["precision"], "session": target["session"],
                   "runtime_packages": target["runtime_packages"]},
        "recipe": {"name": recipe["name"], "gates": recipe["gates"], "evaluation": recipe["evaluation"]},
        "passes": [{"name": p["name"], "params": p["params"], "seconds": p["seconds"], "size_bytes": p["size_bytes"],
                    "stats": p["stats"]} for p in recorded["passes"]],
        "model_file": recorded["model_files"][0],
        "model_files": recorded["model_files"],
        "tokenizer": {"file": "tokenizer/tokenizer.json", "pad_token": tokenizer.pad_token,
                      "pad_token_id": tokenizer.pad_token_id, "padding_side": tokenizer.padding_side},
        "signature": recorded["signature"],
        "tools": recorded["tools"],
        "build_host": recorded["build_host"],
    }
    body["validation"] = recorded["validation"]
    # write_manifest, format 1
    manifest = {"format_version": 1, "hfexport_version": "0.1.0", "created": recorded["created"], **body,
                "files": file_table(bundle)}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")


_INPUTS = {
    "feature-extraction": ["a first sentence", "and a second, longer one to pad the first"],
    "text-classification": ["great film", "dull and long"],
    "fill-mask": ["the cat sat on the [MASK].", "paris is the [MASK] of france."],
}


@pytest.mark.parametrize("task", list(_INPUTS))
def test_format_1_bundle_loads_and_gives_the_same_results(built_bundle, tmp_path, task):
    bundle = built_bundle("bert", task)
    old = _copy(bundle, tmp_path / "format-1")
    write_format_1(old)
    assert json.loads((old / MANIFEST_NAME).read_text())["format_version"] == 1
    predictor, converted = load(bundle), load(old)  # load verifies every checksum
    assert converted.manifest.format_version == 1 and converted.task == task
    assert converted.manifest.model_files == predictor.manifest.model_files
    assert not any(p.cached for p in converted.manifest.passes)
    got, expected = converted(_INPUTS[task]), predictor(_INPUTS[task])
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected


def write_format_2(bundle: Path) -> None:
    """The manifest as format 2 wrote it (before image bundles): a tokenizer always, no `processor` key."""
    def change(data):
        data["format_version"] = 2
        data.pop("processor")
    _rewrite(bundle, change)


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_format_2_bundle_loads_and_gives_the_same_results(built_bundle, tmp_path, task):
    bundle = built_bundle("bert", task)
    old = _copy(bundle, tmp_path / "format-2")
    write_format_2(old)
    predictor, converted = load(bundle), load(old)
    assert converted.manifest.format_version == 2 and converted.manifest.processor is None
    assert converted.manifest.tokenizer == predictor.manifest.tokenizer
    got, expected = converted(_INPUTS[task]), predictor(_INPUTS[task])
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected


def test_format_2_manifest_without_a_tokenizer_is_refused(built_bundle, tmp_path):
    """Format 3 made the tokenizer optional (image bundles name a processor); formats 1 and 2 still need it."""
    old = _copy(built_bundle("bert", "feature-extraction"), tmp_path / "format-2-no-tokenizer")
    write_format_2(old)
    _rewrite(old, lambda m: m.pop("tokenizer"))
    with pytest.raises(BundleIntegrityError, match="invalid manifest: tokenizer is missing"):
        load(old)


def test_bundle_naming_neither_tokenizer_nor_processor_is_refused(built_bundle, tmp_path):
    old = _copy(built_bundle("bert", "feature-extraction"), tmp_path / "no-preprocessing")
    _rewrite(old, lambda m: m.update(tokenizer=None))
    with pytest.raises(BundleIntegrityError, match="names neither a tokenizer nor a processor"):
        load(old)


def test_format_1_bundle_from_before_multi_file_models_loads(built_bundle, tmp_path):
    """The first format-1 writer (eb69cf5) named `model_file` only; the reader supplies `model_files`."""
    bundle = built_bundle("bert", "feature-extraction")
    old = _copy(bundle, tmp_path / "format-1-first")
    write_format_1(old)
    _rewrite(old, lambda m: m.pop("model_files"))
    converted = load(old)
    assert converted.manifest.model_files == ["model.onnx"]
    np.testing.assert_array_equal(converted(["some text"]), load(bundle)(["some text"]))


def test_format_1_generation_bundle_loads_and_generates_the_same(build_llm, tmp_path):
    bundle, _ = build_llm("llama", [{"type": "export_onnx_generation"}])
    old = _copy(bundle, tmp_path / "format-1-llm")
    write_format_1(old)
    generator = load(old)
    assert generator.manifest.format_version == 1 and generator.max_length == load(bundle).max_length
    assert generator.generate("once upon a time", max_new_tokens=6) == \
        load(bundle).generate("once upon a time", max_new_tokens=6)


def test_cli_inspect_shows_the_format_version(built_bundle, tmp_path):
    from click.testing import CliRunner

    from hfexport.cli import main

    bundle = built_bundle("bert", "feature-extraction")
    result = CliRunner().invoke(main, ["inspect", str(bundle)])
    assert result.exit_code == 0, result.output
    assert f"format     {FORMAT_VERSION} (hfexport " in result.output
    old = _copy(bundle, tmp_path / "format-1")
    write_format_1(old)
    assert "format     1 (hfexport 0.1.0)" in CliRunner().invoke(main, ["inspect", str(old)]).output
    as_json = json.loads(CliRunner().invoke(main, ["inspect", "--json", str(bundle)]).output)
    assert as_json["checksums"] == "ok" and as_json["model"]["task"] == "feature-extraction"


# -- the reader stays standard-library only ---------------------------------------------------------------------

_NO_PYDANTIC = TORCH_BLOCKER.replace('("torch", "transformers", "optimum", "nncf")',
                                     '("torch", "transformers", "optimum", "nncf", "pydantic", "yaml")') + """
from hfexport.runtime import load
model = load(sys.argv[1])
print(json.dumps({"task": model.manifest.model.task, "shape": list(model(["one text"]).shape)}))
"""


def test_runtime_reads_manifests_without_pydantic(built_bundle):
    assert '"pydantic"' in _NO_PYDANTIC
    out = subprocess.run([sys.executable, "-c", _NO_PYDANTIC, str(built_bundle("bert", "feature-extraction"))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"task": "feature-extraction", "shape": [1, 32]}


def test_parse_manifest_refuses_what_is_not_an_object():
    with pytest.raises(BundleIntegrityError, match="not a JSON object"):
        parse_manifest([1, 2])
