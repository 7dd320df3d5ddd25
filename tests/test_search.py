"""`--recipe auto`: the candidates a target offers, the measured front, and the fastest passing bundle installed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hfexport.cli import main
from hfexport.search import Candidate, _mark_front, candidate_recipes


def test_candidates_are_the_targets_recipes_and_their_knobs_without_duplicates(tiny_model, tmp_path):
    model = str(tiny_model("bert", "feature-extraction"))
    cpu = [p.stem for p in candidate_recipes("cpu", "feature-extraction", tmp_path / "cpu", model=model)]
    assert {"default", "fp32", "int8-small", "int8-static", "default+qkv-int8", "default+per-tensor",
            "default+float3", "default+float6", "default+qkv-int8+float6", "default+attention-float"} <= set(cpu)
    assert not [name for name in cpu if "float" in name and not name.startswith("default+")]  # default's only
    assert "reference" not in cpu  # plans exactly as `default`
    assert not [name for name in cpu if name.startswith("llm-") or "distill" in name]
    openvino = [p.stem for p in candidate_recipes("openvino", "feature-extraction", tmp_path / "ov", model=model)]
    assert "default" in openvino and "int8-static" not in openvino  # the openvino default is static NNCF int8
    # every candidate is judged by the default recipe's gates
    bodies = [json.loads(p.read_text()) for p in (tmp_path / "cpu").glob("*.yaml")]
    assert len({json.dumps(b["gates"], sort_keys=True) for b in bodies}) == 1


def test_llm_candidates_search_int4_group_sizes(tiny_llm, tmp_path):
    names = [p.stem for p in candidate_recipes("cpu", "text-generation", tmp_path, model=str(tiny_llm("llama")))]
    assert {"llm-fp32", "llm-int8", "llm-int4", "llm-int4+g64", "llm-int4+g128"} <= set(names)
    assert "default" not in names and "llm-int4+g32" not in names  # groups of 32 are llm-int4's own


def test_front_keeps_what_nothing_beats_on_both_speed_and_fidelity():
    def c(name, ms, fid):
        return Candidate(name, None, latency_ms=ms, fidelity=("cosine_min", fid), status="passed")

    fast, exact, middle, beaten = c("fast", 1.0, 0.98), c("exact", 3.0, 1.0), c("middle", 2.0, 0.99), c("x", 2.5, 0.985)
    _mark_front([fast, exact, middle, beaten])
    assert [x.on_front for x in (fast, exact, middle, beaten)] == [True, True, True, False]


@pytest.mark.slow
def test_recipe_auto_installs_the_fastest_passing_candidate(tiny_model, tmp_path):
    model = str(tiny_model("bert", "feature-extraction"))
    out = tmp_path / "auto"
    result = CliRunner().invoke(main, ["build", "-m", model, "--recipe", "auto", "--validation", "quick", "-q",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    search = json.loads((tmp_path / "auto.search" / "search.json").read_text())
    timed = [c for c in search["candidates"] if c["latency_ms"] is not None]
    assert len(timed) >= 4 and sum(c["on_front"] for c in timed) >= 1
    chosen = next(c for c in timed if c["name"] == search["chosen"])
    assert chosen["latency_ms"] == min(c["latency_ms"] for c in timed if c["status"] == "passed")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == search["chosen"]
    assert "<svg" in (tmp_path / "auto.search" / "search.html").read_text()


def test_recipe_auto_refuses_no_gates(tiny_model, tmp_path):
    result = CliRunner().invoke(main, ["build", "-m", str(tiny_model("bert", "feature-extraction")), "--recipe",
                                       "auto", "--no-gates", "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "drop --no-gates" in result.output
    assert not (tmp_path / "x").exists()
