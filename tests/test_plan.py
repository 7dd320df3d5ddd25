"""The planner rejects impossible chains before any work starts, naming the pass and the fix."""

from __future__ import annotations

import pytest

from hfexport.artifacts import TorchModel
from hfexport.context import PlanContext
from hfexport.errors import PlanError
from hfexport.loading import resolve_model
from hfexport.passes import DEPRECATED_PASSES, Pass, PassConfig, get_pass, pass_names
from hfexport.plan import make_plan
from hfexport.profiles import load_target
from hfexport.recipes import PassSpec, Recipe


def _plan(tiny_model, *specs, target="cpu"):
    recipe = Recipe(name="t", passes=[PassSpec(**s) for s in specs])
    return make_plan(PlanContext(load_target(target), recipe, resolve_model(str(tiny_model()))))


def test_plan_default_chain(tiny_model):
    plan = _plan(tiny_model, {"type": "export_onnx"}, {"type": "optimize"}, {"type": "quantize"})
    assert plan.describe() == "export_onnx(torchscript) -> optimize -> quantize(int8, dynamic)"


def test_plan_rejects_pass_before_export(tiny_model):
    with pytest.raises(PlanError, match=r"passes.0 \(quantize\): takes a onnx model but the loaded model gives a torch"):
        _plan(tiny_model, {"type": "quantize"}, {"type": "export_onnx"})


class NoopPass(Pass):
    """A torch -> torch pass that never exports, registered only inside one test."""

    name, summary, consumes, produces, config_class = "noop", "does nothing", TorchModel, TorchModel, PassConfig

    def run(self, artifact, ctx):
        return artifact


def test_plan_rejects_chain_without_export(tiny_model, monkeypatch):
    import hfexport.passes as registry

    monkeypatch.setitem(registry._catalog(), "noop", f"{__name__}:NoopPass")
    with pytest.raises(PlanError, match="ends with a torch model but target 'cpu' deploys onnx; add an export"):
        _plan(tiny_model, {"type": "noop"})


def test_plan_rejects_precision_the_target_lacks(tiny_model, tmp_path):
    from hfexport._shipped import list_shipped

    target = tmp_path / "fp32only.yaml"
    text = list_shipped("targets")[0].read_text()
    target.write_text(text.replace("precisions: [fp32, int8]", "precisions: [fp32]").replace(
        "preferred_precision: int8", "preferred_precision: fp32"))
    with pytest.raises(PlanError, match="precision 'int8' is not supported by target 'fp32only'"):
        _plan(tiny_model, {"type": "export_onnx"}, {"type": "quantize"}, target=str(target))


@pytest.mark.parametrize("name", pass_names())
def test_registry_entry_imports_and_is_consistent(name):
    cls = get_pass(name)
    assert cls.name == name and cls.summary
    cls.config_class()  # every parameter has a default


def test_registry_finds_builtin_passes_by_file():
    """A pass is a module of hfexport/passes named after it: no list to edit when one is added."""
    files = {"prune", "distill", "export", "optimize", "quantize"}
    assert files | set(DEPRECATED_PASSES) == set(pass_names())


# -- one export step: the target's backend picks the format, the task the graph --------------------------------


def _plan_on(source, *specs, target="cpu"):
    recipe = Recipe(name="t", passes=[PassSpec(**s) for s in specs])
    return make_plan(PlanContext(load_target(target), recipe, resolve_model(str(source))))


@pytest.mark.parametrize(("target", "llm", "label"), [
    ("cpu", False, "export(onnx, torchscript)"), ("openvino", False, "export(openvino)"),
    ("cpu", True, "export(onnx, generation)"), ("openvino", True, "export(openvino, generation, stateful)"),
    ("cuda", True, "export(onnx, generation)"),
])  # fmt: skip
def test_export_picks_format_by_backend_and_graph_by_task(tiny_model, tiny_llm, target, llm, label):
    plan = _plan_on(tiny_llm("llama") if llm else tiny_model(), {"type": "export"}, target=target)
    assert plan.describe() == label and plan.notes == ()
    assert plan.steps[0].name == "export" and plan.steps[0].output_kind(TorchModel).kind == load_target(target).artifact


@pytest.mark.parametrize(("params", "target", "llm", "message"), [
    ({"stateful": False}, "cpu", True, "stateful applies to openvino text-generation exports, not to the "
                                       "text-generation export of target 'cpu' .onnxruntime.; remove stateful"),
    ({"exporter": "dynamo"}, "openvino", False, "exporter applies to onnxruntime encoder exports, not to the encoder"),
    ({"check_tokens": 4}, "cpu", False, "check_tokens applies to onnxruntime text-generation and openvino "
                                        "text-generation and xla text-generation exports"),
    ({"tolerance": 0.01}, "openvino", True, "tolerance applies to onnxruntime encoder and openvino encoder"),
    ({"compress_to_fp16": True}, "cpu", False, "compress_to_fp16 applies to openvino encoder and openvino "
                                               "text-generation exports"),
    ({"opset": 13}, "cpu", True, "onnxruntime text-generation export: opset: Input should be greater than or "
                                 "equal to 14"),
])  # fmt: skip
def test_export_refuses_an_option_the_backend_or_task_does_not_take(tiny_model, tiny_llm, params, target, llm,
                                                                      message):
    with pytest.raises(PlanError, match=r"passes.0 \(export\): " + message):
        _plan_on(tiny_llm("llama") if llm else tiny_model(), {"type": "export", **params}, target=target)


def test_export_takes_the_options_of_its_route_and_records_only_those(tiny_model):
    plan = _plan_on(tiny_model(), {"type": "export", "exporter": "torchscript", "tolerance": 0.01})
    assert plan.steps[0].config.model_dump() == {"exporter": "torchscript", "opset": None, "tolerance": 0.01}


def test_deprecated_export_pass_types_plan_as_before_with_a_note(tiny_model):
    plan = _plan_on(tiny_model(), {"type": "export_onnx"}, {"type": "optimize"})
    assert plan.describe() == "export_onnx(torchscript) -> optimize"
    assert [step.name for step in plan.steps] == ["export_onnx", "optimize"]
    assert plan.notes == ("passes.0: pass type export_onnx is deprecated: write `export` (the target picks the "
                          "format, the task the graph); export_onnx goes in the next release",)


def test_optimize_is_left_out_on_openvino_with_a_note(tiny_model):
    plan = _plan_on(tiny_model(), {"type": "export"}, {"type": "optimize"}, {"type": "quantize"}, target="openvino")
    assert [step.name for step in plan.steps] == ["export", "quantize"]
    assert plan.notes[0].startswith("passes.1 (optimize) left out on target 'openvino': OpenVINO fuses")


def test_quantize_takes_the_targets_int8(tiny_model):
    for target, label in (("cpu", "quantize(int8, dynamic)"), ("openvino", "quantize(int8, static)")):
        plan = _plan_on(tiny_model(), {"type": "export"}, {"type": "quantize", "precision": "int8"}, target=target)
        assert plan.steps[-1].describe() == label


# -- the progress line: each pass renders its own stats, in the words of the build before the runner ------------


@pytest.mark.parametrize("stats", [
    {"nodes": 516, "max_abs_diff_vs_torch": 1e-6},
    {"nodes_before": 516, "nodes": 46, "fused_operators": {"Attention": 6, "SkipLayerNormalization": 12}},
    {"nodes_before": None, "nodes": 40, "fused_operators": {}},
    {"nodes": 80, "quantized_nodes": 24, "isa": "avx512_vnni", "mode": "dynamic"},
    {"nodes": 80, "quantized_nodes": 12, "precision": "int4", "algorithm": "nncf.compress_weights"},
    {"precision": "fp16", "fp16_initializers": 100},
])  # fmt: skip
def test_stats_parts_reproduce_the_old_progress_text(stats):
    def old_stats_line(stats, size):  # `_stats_line` of hfexport/api.py before the pass runner, for these keys
        parts = [f"{size / 1e6:.1f} MB"]
        if "nodes" in stats:
            before = stats.get("nodes_before")
            parts.append(f"{before} -> {stats['nodes']} nodes" if before else f"{stats['nodes']} nodes")
        if stats.get("fused_operators"):
            parts.append("fused " + ", ".join(f"{k} x{v}" for k, v in stats["fused_operators"].items()))
        if "quantized_nodes" in stats:
            parts.append(f"{stats['quantized_nodes']} {stats.get('precision', 'int8')} nodes "
                         f"({stats.get('isa') or stats.get('algorithm')})")
        return "; ".join(parts)

    for name in ("export", "export_openvino", "optimize", "quantize"):
        step = get_pass(name)(get_pass(name).config_class())
        assert "; ".join(["1.5 MB", *step.stats_parts(stats)]) == old_stats_line(stats, 1_500_000)
