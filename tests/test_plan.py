"""The planner rejects impossible chains before any work starts, naming the pass and the fix."""

from __future__ import annotations

import pytest

from hfexport.artifacts import TorchModel
from hfexport.context import PlanContext
from hfexport.errors import PlanError
from hfexport.loading import resolve_model
from hfexport.passes import BUILTIN_PASSES, Pass, PassConfig, get_pass, pass_names
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


@pytest.mark.parametrize("name", sorted(BUILTIN_PASSES))
def test_registry_entry_imports_and_is_consistent(name):
    cls = get_pass(name)
    assert cls.name == name and cls.summary
    cls.config_class()  # every parameter has a default


def test_registry_lists_builtin_passes():
    assert set(BUILTIN_PASSES) <= set(pass_names())
