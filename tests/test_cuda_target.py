"""The cuda target: ONNX Runtime's CUDA execution provider, fp16 graphs.

Everything here runs on a host without a GPU, where the build still works (a build machine often has
none): the fp16 graph is validated on ONNX Runtime's CPU provider, which runs fp16 nodes through casts,
and the report says so. What only a GPU can show (CUDA kernels, the device-bound KV cache, speed) needs
`hfexport build --target cuda` on a host with one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hfexport.errors import ConfigError, PlanError

FP16_PASSES = [{"type": "export"}, {"type": "optimize"}, {"type": "quantize", "precision": "fp16"}]
LLM_FP16_PASSES = [{"type": "export"}, {"type": "quantize", "precision": "fp16"}]


def _has_cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _plan(source, specs, target):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.profiles import load_target
    from hfexport.recipes import PassSpec, Recipe

    recipe = Recipe(name="t", passes=[PassSpec(**s) for s in specs])
    return make_plan(PlanContext(load_target(target), recipe, resolve_model(str(source))))


def test_cuda_target_defaults_and_host_fit():
    from hfexport.profiles import load_target

    cuda = load_target("cuda")
    assert (cuda.backend, cuda.device, cuda.preferred_precision) == ("onnxruntime", "cuda", "fp16")
    assert cuda.execution_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert cuda.recipe_for("feature-extraction") == "fp16"
    assert cuda.recipe_for("text-generation") == "llm-fp16"
    fits, why = cuda.host_fit()
    if not _has_cuda_provider():
        assert not fits and "CUDAExecutionProvider" in why


def test_cuda_default_recipe_plans(tiny_model):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

    cuda = load_target("cuda")
    plan = make_plan(PlanContext(cuda, load_recipe(cuda.recipe_for("feature-extraction")),
                                 resolve_model(str(tiny_model()))))
    assert plan.describe().endswith("optimize -> quantize(fp16)")


@pytest.mark.parametrize("specs, target, message", [
    (FP16_PASSES, "cpu", "precision 'fp16' is not supported by target 'cpu'"),
    ([{"type": "export"}, {"type": "quantize", "precision": "fp16"}], "openvino",
     "precision 'fp16' is not supported by target 'openvino'"),
    ([{"type": "export"}, {"type": "quantize", "mode": "dynamic"}], "cuda",
     "precision 'int8' is not supported by target 'cuda'"),
])  # fmt: skip
def test_plan_rejects_precisions_the_target_lacks(tiny_model, specs, target, message):
    with pytest.raises(PlanError, match=message):
        _plan(tiny_model(), specs, target)


@pytest.mark.parametrize("extra", [{"mode": "static"}, {"weights_only": True}, {"per_channel": True}])
def test_fp16_takes_no_quantiser_options(extra):
    from hfexport.recipes import PassSpec, pass_config

    with pytest.raises(ConfigError, match=f"precision fp16 .* takes no quantiser options .*{next(iter(extra))}"):
        pass_config(PassSpec(type="quantize", precision="fp16", **extra))


@pytest.fixture(scope="module")
def cuda_bundle(tiny_model, fast_recipe, tmp_path_factory):
    from hfexport.api import build
    from hfexport.progress import Progress

    out = tmp_path_factory.mktemp("cuda") / "bundle"
    result = build(str(tiny_model()), target="cuda", recipe=str(fast_recipe(FP16_PASSES)), output=out,
                   progress=Progress("quiet"))
    return out, result


def test_cuda_bundle_holds_an_fp16_graph_with_fp32_inputs_and_outputs(cuda_bundle):
    import onnx
    from onnx import TensorProto

    out, result = cuda_bundle
    graph = onnx.load(str(out / "model.onnx")).graph
    kinds = {init.data_type for init in graph.initializer}
    assert TensorProto.FLOAT16 in kinds and TensorProto.FLOAT not in kinds
    assert {o.type.tensor_type.elem_type for o in graph.output} == {TensorProto.FLOAT}
    stats = result.manifest.passes[-1].stats
    assert stats["precision"] == "fp16" and stats["fp16_initializers"] > 0 and stats["casts_added"] > 0
    target = result.manifest.target
    assert (target.name, target.precision, target.runtime_packages) == ("cuda", "fp16", ["onnxruntime-gpu"])


def test_cuda_bundle_keeps_skip_layer_norm_fused(cuda_bundle):
    import onnx

    out, result = cuda_bundle  # the cpu-only rewrite (skip_layer_norm.py) does not reach a cuda graph
    assert "SkipLayerNormalization" in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "disabled_optimizers" not in result.manifest.target.session or not \
        result.manifest.target.session["disabled_optimizers"]


def test_cuda_bundle_is_validated_and_says_where_it_ran(cuda_bundle):
    out, result = cuda_bundle
    report = json.loads((out / "report" / "report.json").read_text())
    bundle_stage = report["stages"][-1]
    assert result.report.passed
    assert bundle_stage["fidelity"]["cosine_min"] > 0.999  # fp16 weights of a tiny model: rounding only
    assert bundle_stage["size_bytes"] < 0.6 * report["stages"][-2]["size_bytes"]
    if not _has_cuda_provider():
        assert any(note.startswith("ran on CPUExecutionProvider: this host lacks CUDAExecutionProvider")
                   for note in bundle_stage["notes"])
        assert report["target"]["runtime"]["asked_for"] == "CUDAExecutionProvider, CPUExecutionProvider"


def test_cuda_bundle_runtime_returns_fp32_embeddings_close_to_pytorch(cuda_bundle, tiny_model):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from hfexport.runtime import load

    out, _ = cuda_bundle
    texts = ["a short sentence", "another, somewhat longer sentence about the weather today"]
    got = load(out)(texts)
    tokenizer, model = AutoTokenizer.from_pretrained(str(tiny_model())), AutoModel.from_pretrained(str(tiny_model()))
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.999


def test_fp16_conversion_keeps_named_nodes_in_fp32(built_bundle, tmp_path):
    import onnx
    from onnx import TensorProto

    from hfexport.backends._onnx.float16 import convert_float16
    from hfexport.errors import ExportError

    source = built_bundle(passes=[{"type": "export_onnx"}]) / "model.onnx"
    graph = onnx.load(str(source)).graph
    matmul = next(n for n in graph.node if n.op_type == "MatMul" and n.input[1] in {i.name for i in graph.initializer})
    stats = convert_float16(source, tmp_path / "fp16.onnx", keep_nodes=[matmul.name])
    converted = onnx.load(str(tmp_path / "fp16.onnx")).graph
    weights = {i.name: i.data_type for i in converted.initializer}
    assert weights[matmul.input[1]] == TensorProto.FLOAT and stats["fp32_initializers_kept"] >= 1
    with pytest.raises(ExportError, match="exclude_nodes names nodes the graph does not have: nope"):
        convert_float16(source, tmp_path / "x.onnx", keep_nodes=["nope"])


def test_cuda_llm_bundle_generates_like_pytorch(build_llm):
    from hfexport.runtime import load

    out, result = build_llm("llama", LLM_FP16_PASSES, gates={"top1_agreement": 0.98}, target="cuda")
    assert result.report.passed
    fidelity = result.report.stages[-1].fidelity
    assert fidelity["top1_agreement"] >= 0.98
    generator = load(out)
    assert generator.decoder.cache_dtype == np.float32  # fp32 at the graph's edges: the cache is an input
    assert isinstance(generator("Once upon a time", max_new_tokens=4), str)
