"""The CLI through Click's runner: listings, inspect, run, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from hfexport.cli import main
from tests.conftest import INT8_PASSES


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and pattern in lines[-1], result.output
    assert "Traceback" not in result.output


def test_cli_help_is_fast_and_imports_no_torch():
    started = time.perf_counter()
    probe = "import sys; from hfexport.cli import main; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    subprocess.run([sys.executable, "-m", "hfexport.cli", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - started < 5  # two interpreter starts; the budget for --help alone is 1 s


def test_cli_targets_lists_cpu_and_host_fit(cli):
    result = cli("targets")
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if line.startswith("cpu"))
    assert "onnxruntime/cpu" in line and ("yes" in line or "no" in line)


def test_cli_recipes_lists_default_chain(cli):
    result = cli("recipes")
    line = next(line for line in result.output.splitlines() if line.startswith("default "))
    assert "cpu,openvino" in line and "export -> optimize -> quantize" in line
    assert "openvino-default -> default" in result.output


def test_cli_inspect_summarises_and_verifies(cli, built_bundle):
    bundle = built_bundle("bert", "feature-extraction", passes=INT8_PASSES, gates={"cosine_min": 0.5})
    result = cli("inspect", bundle)
    assert result.exit_code == 0, result.output
    assert "feature-extraction" in result.output and "quantize" in result.output
    assert "checksums  ok" in result.output


def test_cli_inspect_flags_tampered_file(cli, built_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built_bundle("bert", "feature-extraction"), copy)
    (copy / "tokenizer" / "tokenizer.json").write_text("{}")
    result = cli("inspect", copy)
    assert result.exit_code == 1 and "tokenizer/tokenizer.json does not match its checksum" in result.output


def test_cli_run_prints_embeddings_and_similarity(cli, built_bundle):
    result = cli("run", built_bundle("bert", "feature-extraction"), "some text", "more text")
    assert result.exit_code == 0, result.output
    assert "dim=32" in result.output and "cosine similarity" in result.output


def test_cli_run_classification_prints_labels(cli, built_bundle):
    result = cli("run", built_bundle("bert", "text-classification"), "great film")
    payload = json.loads(result.output.split(": ", 1)[1])
    assert payload["label"] in {"negative", "positive"}


def test_cli_build_writes_bundle(cli, tiny_model, fast_recipe, tmp_path):
    out = tmp_path / "cli-bundle"
    result = cli("build", "--model", tiny_model(), "--recipe", fast_recipe(), "--output", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "bundle written to" in result.output and (out / "manifest.json").is_file()


def test_cli_build_json_log_lines(cli, tiny_model, fast_recipe, tmp_path):
    result = cli("build", "--model", tiny_model(), "--recipe", fast_recipe(), "--output", tmp_path / "j",
                 "--log-format", "json")
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert {"start", "done", "bundle"} <= {e["event"] for e in events}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "./no-such-folder"], "model folder not found"),
        (["--target", "quantum"], "unknown target 'quantum'"),
        (["--recipe", "missing-recipe"], "unknown recipe 'missing-recipe'"),
        (["--recipe", "nope/typo.yaml"], "recipe file not found"),
        (["--task", "image-segmentation"], "unsupported task 'image-segmentation'"),
        (["--calibration-data", "no-such-texts.txt"], "data file not found"),
    ],
)
def test_cli_build_bad_input_one_line_error(cli, tiny_model, tmp_path, args, message):
    defaults = {"--model": str(tiny_model())}
    for i in range(0, len(args), 2):
        defaults[args[i]] = args[i + 1]
    flat = [item for pair in defaults.items() for item in pair]
    result = cli("build", *flat, "--output", tmp_path / "out", "--quiet")
    _one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_cli_build_misspelt_recipe_key(cli, tiny_model, tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("schema_version: 1\npasses:\n  - type: export_onnx\n    exportr: dynamo\n")
    result = cli("build", "--model", tiny_model(), "--recipe", recipe, "--output", tmp_path / "o")
    _one_line_error(result, "exportr")


def test_cli_build_impossible_chain(cli, tiny_model, tmp_path):
    recipe = tmp_path / "backwards.yaml"
    recipe.write_text("schema_version: 1\npasses:\n  - type: optimize\n  - type: export_onnx\n")
    result = cli("build", "--model", tiny_model(), "--recipe", recipe, "--output", tmp_path / "o")
    _one_line_error(result, "passes.0 (optimize): takes a onnx model")


def test_cli_build_unreadable_calibration_data(cli, tiny_model, tmp_path):
    data = tmp_path / "binary.txt"
    data.write_bytes(b"\xff\xfe\x00bad")
    result = cli("build", "--model", tiny_model(), "--calibration-data", data, "--output", tmp_path / "o")
    _one_line_error(result, "not UTF-8 text")


def test_cli_build_existing_output(cli, tiny_model, tmp_path):
    (tmp_path / "taken").mkdir()
    result = cli("build", "--model", tiny_model(), "--output", tmp_path / "taken")
    _one_line_error(result, "already exists (use --force")


def test_cli_build_gate_failure_exit_code(cli, tiny_model, fast_recipe, tmp_path):
    recipe = fast_recipe(INT8_PASSES, gates={"cosine_min": 1.0})
    result = cli("build", "--model", tiny_model(), "--recipe", recipe, "--output", tmp_path / "g", "--quiet")
    assert result.exit_code == 3
    _one_line_error(result, "fidelity gate failed: cosine_min")
    assert (tmp_path / "g.failed-report" / "report.html").is_file()


def test_cli_run_on_missing_bundle(cli, tmp_path):
    _one_line_error(cli("run", tmp_path / "nothing", "hi"), "bundle folder not found")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_cli_build_interrupted_by_signal_leaves_nothing(tiny_model, fast_recipe, tmp_path, signame):
    import os
    import signal

    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "hfexport.cli", "build", "--model", str(tiny_model()), "--recipe",
               str(fast_recipe()), "--output", str(out), "--log-format", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.getcwd()})
    for line in process.stderr:  # wait until the second pass has started: work is under way
        if line.startswith("{") and json.loads(line).get("event") == "start" and json.loads(line).get("index") == 2:
            break
    process.send_signal(getattr(signal, signame))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a partial bundle or temporary folder was left"
