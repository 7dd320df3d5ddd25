"""`hfexport build --validation quick`: a smaller evaluation that still gates, marked so nobody benchmarks it;
and validation's progress lines with counts and an ETA."""

from __future__ import annotations

import io
import json

from click.testing import CliRunner

from hfexport.cli import main
from hfexport.progress import Progress
from hfexport.recipe_schema import QUICK_EVALUATION
from hfexport.recipes import load_recipe, with_validation
from hfexport.validation.timing import time_alternating


def test_quick_caps_the_recipes_evaluation_and_full_keeps_it():
    recipe = load_recipe("default")
    assert with_validation(recipe, None) is recipe and with_validation(recipe, "full") is recipe
    quick = with_validation(recipe, "quick").evaluation
    assert quick.mode == "quick" and quick.memory is False
    for key, cap in QUICK_EVALUATION.items():
        assert getattr(quick, key) == min(getattr(recipe.evaluation, key), cap)
    assert quick.sequence_length == recipe.evaluation.sequence_length  # the same inputs, fewer of them
    assert recipe.evaluation.mode == "full"  # the loaded recipe itself is unchanged


def test_quick_build_gates_and_says_quick_in_manifest_report_and_output(tiny_model, tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["build", "--model", str(tiny_model("bert", "feature-extraction")),
                                       "--output", str(out), "--validation", "quick"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    evaluation = manifest["recipe"]["evaluation"]
    assert evaluation["mode"] == "quick" and evaluation["samples"] == QUICK_EVALUATION["samples"]
    assert evaluation["memory"] is False
    assert manifest["validation"]["timing_warnings"][0].startswith("quick validation, not a benchmark")
    gates = {g["metric"] for g in manifest["validation"]["gates"]}
    assert {"cosine_mean", "cosine_min"} <= gates and manifest["validation"]["passed"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["evaluation"]["samples"] == QUICK_EVALUATION["samples"]
    assert report["evaluation"]["latency_runs"] == QUICK_EVALUATION["latency_runs"]
    assert report["timing_warnings"][0] == manifest["validation"]["timing_warnings"][0]
    assert all(stage["peak_rss_mb"] is None for stage in report["stages"])  # no memory measurement
    assert "quick validation, not a benchmark" in (out / "report" / "report.html").read_text()
    # The final line gives no speed ratio for a quick validation.
    final = result.output.strip().splitlines()[-1]
    assert final.startswith("bundle written to") and "x faster" not in final and "quick validation" in final


def test_bogus_validation_mode_is_one_click_error(tiny_model, tmp_path):
    result = CliRunner().invoke(main, ["build", "--model", str(tiny_model("bert", "feature-extraction")),
                                       "--output", str(tmp_path / "b"), "--validation", "bogus"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: Invalid value for '--validation': 'bogus' is not one of 'full', 'quick'."]
    assert not (tmp_path / "b").exists()


def test_timing_reports_counts_and_an_eta_as_it_goes():
    stream = io.StringIO()
    progress = Progress("text", stream=stream, tick_seconds=0)
    calls = []
    times = time_alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=4, warmup=1,
                             block=2, settle=1, progress=progress, what="latency")
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    total = 2 * (1 + 4 + 1 * 2)  # per side: warm-up, timed runs, one settle call per block
    assert len(calls) == total
    lines = stream.getvalue().splitlines()
    assert len(lines) == total and lines[-1].strip().startswith(f"latency: {total}/{total} calls")
    assert "ETA 0s" in lines[-1] and all("ETA" in line for line in lines)


def test_ticker_is_quiet_for_fast_loops_and_speaks_json():
    stream = io.StringIO()
    ticker = Progress("text", stream=stream).ticker("fidelity", 100, "texts")  # default: every 5 s at most
    for _ in range(100):
        ticker.advance()
    assert stream.getvalue() == ""
    stream = io.StringIO()
    ticker = Progress("json", stream=stream, tick_seconds=0).ticker("fidelity", 64, "texts")
    ticker.counting(len)(["x"] * 32)
    event = json.loads(stream.getvalue())
    assert (event["event"], event["step"], event["done"], event["total"], event["unit"]) == (
        "progress", "fidelity", 32, 64, "texts")
    assert event["eta_s"] >= 0
