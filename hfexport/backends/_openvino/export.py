"""PyTorch -> OpenVINO IR (model.xml + model.bin): encoder graphs with dynamic batch and sequence axes, and
decoder LLMs with a KV cache, stateful by default; each checked against PyTorch before it is passed on.

`openvino.convert_model` traces the task's module (TorchScript) with the sample batch. Generation uses the
same tensor-only wrapper as the ONNX export (`_generation_graph.py`); by default the past/present pairs then
become variables inside the InferRequest (`stateful.py`), so the cache never leaves OpenVINO and its CPU
plugin runs attention and the cache append as one node. `stateful: false` keeps explicit past/present ports
(the ONNX layout), for devices or tools that cannot hold state.

NOTE: the encoder check compiles at f32 on purpose: left to itself, OpenVINO runs bf16 on CPUs with
AVX512-BF16 and the check would measure that instead. Why stateful by default:
docs/decisions/0043-openvino-stateful-kv-cache.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hfexport.artifacts import OpenVINOModel, TorchModel
from hfexport.backends._generation_graph import (
    FIXED_INPUTS,
    cache_layout,
    generation_wrapper,
    graph_inputs,
    greedy_check,
    keeps_logits,
    past_names,
    present_names,
    raise_on_mismatch,
    sample_inputs,
)
from hfexport.backends._openvino.stateful import make_stateful
from hfexport.backends._torch_graph import IMAGE_INPUTS, check_against_torch, task_graph
from hfexport.context import BuildContext
from hfexport.errors import ExportError, first_line
from hfexport.passes.base import PassConfig


class ExportOpenVINOConfig(PassConfig):
    """Options of an OpenVINO encoder export."""

    # NOTE: off by default. fp16 weights halve the file, but every later step (and the check against
    # PyTorch) then starts from rounded weights; int8 quantisation shrinks the file more anyway.
    compress_to_fp16: bool = Field(False, description="store float weights as fp16 (decompressed on load)")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference to PyTorch on the sample batch")

    def describe_parts(self) -> list[str]:
        return []


class ExportOpenVINOGenerationConfig(PassConfig):
    """Options of an OpenVINO KV-cache (text generation) export."""

    stateful: bool = Field(True, description="keep the KV cache inside the InferRequest (false: explicit ports)")
    compress_to_fp16: bool = Field(False, description="store float weights as fp16 (decompressed on load)")
    check_tokens: int = Field(8, ge=1, le=256, description="greedy tokens that must equal PyTorch's generate")

    def describe_parts(self) -> list[str]:
        return ["stateful" if self.stateful else "explicit KV"]


def export_encoder(config: ExportOpenVINOConfig, artifact: TorchModel, ctx: BuildContext,
                   out_dir: Path) -> OpenVINOModel:
    import openvino as ov
    import torch

    graph = task_graph(ctx.torch_module(artifact.path), ctx.input_processor(), ctx.source.task)
    path = out_dir / "model.xml"
    try:
        with torch.inference_mode():
            model = ov.convert_model(graph.wrapper, example_input=graph.sample_inputs(), input=_ports(graph))
        _name_ports(model, graph.input_names, graph.output_names)
        ov.save_model(model, str(path), compress_to_fp16=config.compress_to_fp16)
    except Exception as exc:  # the converter raises anything; the first line is what the user needs
        raise ExportError(f"OpenVINO export failed: {first_line(exc)}") from exc

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled.create_infer_request().infer(graph.sample_feeds())
    got = [result[compiled.output(name)] for name in graph.output_names]
    worst = check_against_torch(graph, got, config.tolerance, what="OpenVINO IR")
    return OpenVINOModel(path, tuple(graph.input_names), tuple(graph.output_names),
                         stats={"nodes": len(model.get_ops()), "max_abs_diff_vs_torch": worst,
                                "weights": "fp16" if config.compress_to_fp16 else "fp32"})


def export_generation(config: ExportOpenVINOGenerationConfig, artifact: TorchModel, ctx: BuildContext,
                      out_dir: Path) -> OpenVINOModel:
    import gc

    import openvino as ov
    import torch

    model = ctx.torch_module(artifact.path)
    layers, kv_heads, head_dim = cache_layout(model)
    past, present = past_names(layers), present_names(layers)
    keep = keeps_logits(model)
    inputs, outputs = graph_inputs(layers, keep), ["logits", *present]
    ports = ([(ov.PartialShape([-1, -1]), ov.Type.i64)] * len(FIXED_INPUTS)
             + [(ov.PartialShape([]), ov.Type.i64)] * keep
             + [(ov.PartialShape([-1, kv_heads, -1, head_dim]), ov.Type.f32)] * len(past))
    path = out_dir / "model.xml"
    try:
        with torch.inference_mode():
            ir = ov.convert_model(generation_wrapper(model, layers, past_4d=True, keep=keep), input=ports,
                                  example_input=sample_inputs(model, layers, kv_heads, head_dim, keep=keep))
        _name_ports(ir, inputs, outputs)
        if config.stateful:
            make_stateful(ir, past, present, kv_heads, head_dim)
        ov.save_model(ir, str(path), compress_to_fp16=config.compress_to_fp16)
    except Exception as exc:  # the converter raises anything; the first line is what the user needs
        raise ExportError(f"OpenVINO export of {ctx.source.model_type} for generation failed: "
                          f"{first_line(exc)}") from exc
    # The converted model's constants share the PyTorch weights or copy them: what the IR file needs is on disk.
    names = (tuple(p.get_any_name() for p in ir.inputs), tuple(p.get_any_name() for p in ir.outputs))
    stats = {"nodes": len(ir.get_ops()), "stateful": config.stateful, "layers": layers, "kv_heads": kv_heads,
             "head_dim": head_dim, "attention_ops": _count(ir, "ScaledDotProductAttention"),
             "weights": "fp16" if config.compress_to_fp16 else "fp32"}
    del ir
    gc.collect()
    # The check takes the last reference to the PyTorch model and lets it go (validation loads it again) before
    # OpenVINO compiles the IR: one copy of the weights in memory (docs/decisions/0183-models-past-2gb.md).
    held = [model]
    del model
    want, got, diff = _greedy_check(held, ctx.hf_tokenizer(), path, config.check_tokens,
                                    lambda: ctx.release_torch_module(artifact.path))
    raise_on_mismatch(want, got, diff, "OpenVINO")
    return OpenVINOModel(path, *names,
                         stats={**stats, "greedy_tokens_checked": len(want), "max_abs_logit_diff_vs_torch": diff})


def _ports(graph) -> list:
    """Token inputs: int64 [batch, sequence]; pixel_values: f32 [batch, 3, height, width] as the processor fixes;
    input_values (speech): f32 [batch, samples]."""
    import openvino as ov

    ports = []
    for name in graph.input_names:
        if name in IMAGE_INPUTS:
            ports.append((ov.PartialShape([-1, *graph.sample[name].shape[1:]]), ov.Type.f32))
        elif name == "input_values":  # speech: f32 [batch, samples]
            ports.append((ov.PartialShape([-1, -1]), ov.Type.f32))
        else:
            ports.append((ov.PartialShape([-1, -1]), ov.Type.i64))
    return ports


def _name_ports(model, inputs, outputs) -> None:
    """Traced graphs carry positional names; the runtime feeds and reads by the task's names."""
    for port, name in zip(model.inputs, inputs):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, outputs):
        port.get_tensor().set_names({name})


def _count(model, op_type: str) -> int:
    return sum(op.get_type_name() == op_type for op in model.get_ops())


def _greedy_check(model, tokenizer, path, tokens: int, release=None) -> tuple[list[int], list[int], float]:
    """PyTorch `generate` vs the runtime's OpenVINO decoder, at f32 with an f32 cache (see profiles.py; `model`,
    `release`: see `greedy_check`)."""
    import gc

    from hfexport.runtime.backends.openvino import open_session

    opened = []

    def open_decoder():
        session = {"openvino": {"inference_precision": "f32", "kv_cache_precision": "f32"}}
        opened.append(open_session(path, session).decoder())
        return opened[-1]

    try:
        return greedy_check(model, tokenizer, open_decoder, tokens, past_window=True, release=release)
    finally:
        opened.clear()  # the compiled model holds the weights: gone before NNCF reads the IR
        gc.collect()
