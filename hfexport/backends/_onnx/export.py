"""PyTorch -> ONNX: encoder graphs with dynamic batch and sequence axes, and decoder LLM graphs with an
explicit KV cache; each checked against PyTorch before it is passed on.

The generation graph (one file, so the bundle, checksums and quantisers treat it like any ONNX model) has
the layout in `_generation_graph.py`, shared with the OpenVINO generation export. Prefill feeds a past of
length 0 (a 4-D empty tensor); each decode step feeds one token and the previous step's `present` as `past`.

NOTE: encoders go through the TorchScript exporter by default (docs/decisions/0041-torchscript-encoder-export.md);
LLMs through a tensor-only wrapper traced by TorchScript, one graph for prefill and decode
(docs/decisions/0042-one-generation-graph.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from hfexport.artifacts import OnnxModel, TorchModel
from hfexport.backends._generation_graph import (
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
from hfexport.backends._onnx.external import gather_external_data
from hfexport.backends._onnx.fused_decoder import fused_inputs, fused_refusal, write_fused_graph
from hfexport.backends._torch_graph import check_against_torch, keep_file_inputs, task_graph
from hfexport.context import BuildContext
from hfexport.errors import ExportError, first_line
from hfexport.passes.base import PassConfig


class ExportOnnxConfig(PassConfig):
    """Options of an ONNX encoder export."""

    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    opset: int | None = Field(None, ge=13, le=23, description="defaults to the target's opset")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference to PyTorch on the sample batch")

    def describe_parts(self) -> list[str]:
        return [self.exporter]


class ExportOnnxGenerationConfig(PassConfig):
    """Options of an ONNX KV-cache (text generation) export."""

    opset: int | None = Field(None, ge=14, le=23, description="defaults to the target's opset")
    check_tokens: int = Field(8, ge=1, le=256, description="greedy tokens that must equal PyTorch's generate")
    graph: Literal["auto", "fused", "traced"] = Field(
        "auto", description="fused: written from the weights with ONNX Runtime's attention and norm operators "
        "(Llama, Mistral, Qwen2, Qwen3); traced: TorchScript's trace of any causal LM; auto: fused where it applies")

    def describe_parts(self) -> list[str]:
        return [] if self.graph == "auto" else [self.graph]


def export_encoder(config: ExportOnnxConfig, artifact: TorchModel, ctx: BuildContext, out_dir: Path) -> OnnxModel:
    import onnx
    import onnxruntime as ort

    model = ctx.torch_module(artifact.path)
    graph = task_graph(model, ctx.input_processor(), ctx.source.task)
    sample, input_names, output_names = graph.sample, graph.input_names, graph.output_names
    path = out_dir / "model.onnx"
    opset = config.opset or ctx.target.opset
    try:
        if config.exporter == "torchscript":
            _export_torchscript(graph.wrapper, sample, input_names, output_names, graph.dynamic_axes(), path, opset)
        else:
            _export_dynamo(model, sample, input_names, output_names, path, opset)
    except ExportError:
        raise
    except Exception as exc:  # exporters raise anything; the first line is what the user needs
        raise ExportError(f"ONNX export ({config.exporter}) failed: {first_line(exc)}") from exc

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    keep_file_inputs(graph, [i.name for i in session.get_inputs()])  # an input the model ignores is dropped
    got = session.run(output_names, graph.sample_feeds())
    worst = check_against_torch(graph, got, config.tolerance)
    onnx_graph = onnx.load(str(path), load_external_data=False).graph
    return OnnxModel(path, tuple(input_names), tuple(output_names),
                     stats={"nodes": len(onnx_graph.node), "max_abs_diff_vs_torch": worst, "opset": opset,
                            "exporter": config.exporter})


def _export_torchscript(wrapper, sample, input_names, output_names, axes, path, opset) -> None:
    import torch

    with torch.inference_mode():
        torch.onnx.export(wrapper, tuple(sample[n] for n in input_names), str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=opset, dynamo=False)


def _export_dynamo(model, sample, input_names, output_names, path, opset) -> None:
    from transformers.exporters import OnnxConfig, OnnxExporter

    inputs = {n: sample[n] for n in input_names}
    exported = OnnxExporter().export(model, inputs, config=OnnxConfig(dynamic=True, opset_version=opset))
    program = exported["model"].program if hasattr(exported, "__getitem__") else exported.program
    graph = program.graph
    # Keep only the task's outputs, under the names the runtime expects.
    by_name = {v.name: v for v in graph.outputs}
    missing = [n for n in output_names if n not in by_name]
    if missing:
        raise ExportError(f"dynamo export has no output {missing[0]!r} (has: {', '.join(by_name)})")
    graph.outputs.clear()
    graph.outputs.extend(by_name[n] for n in output_names)
    import onnx_ir

    onnx_ir.save(program, str(path))


def export_generation(config: ExportOnnxGenerationConfig, artifact: TorchModel, ctx: BuildContext,
                      out_dir: Path) -> OnnxModel:
    import onnx

    model = ctx.torch_module(artifact.path)
    layers, kv_heads, head_dim = cache_layout(model)
    path = out_dir / "model.onnx"
    opset = config.opset or ctx.target.opset
    outputs = ["logits", *present_names(layers)]
    refusal = None if config.graph == "traced" else fused_refusal(model)
    if config.graph == "fused" and refusal:
        raise ExportError(f"export_onnx_generation graph: fused cannot write this model ({refusal}); use graph: "
                          "traced or auto")
    fused = config.graph != "traced" and refusal is None
    if fused:
        inputs = fused_inputs(layers)
        try:
            nodes = write_fused_graph(model, path, layers=layers, kv_heads=kv_heads, head_dim=head_dim,
                                      positions=ctx.source.max_length, opset=opset)
        except Exception as exc:  # noqa: BLE001 - an unexpected module layout; the trace still works
            raise ExportError(f"fused decoder graph of {ctx.source.model_type} failed: {first_line(exc)}; "
                              "export_onnx_generation graph: traced avoids it") from exc
        ctx.progress.info(f"fused decoder graph: {nodes} operators")
    else:
        inputs = _trace_generation(model, path, layers, kv_heads, head_dim, outputs, opset, ctx)
    external = gather_external_data(path)  # a model past 2 GB: one `model.onnx.data` sidecar, not a file per tensor
    # The check takes the last reference to the PyTorch model and lets it go (validation loads it again) before
    # ONNX Runtime opens the graph: one copy of the weights in memory (docs/decisions/0183-models-past-2gb.md).
    held = [model]
    del model
    want, got, diff = _greedy_check(held, ctx.hf_tokenizer(), path, config.check_tokens,
                                    lambda: ctx.release_torch_module(artifact.path))
    raise_on_mismatch(want, got, diff, "ONNX")
    written = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx"))  # the fused graph's >= 21
    return OnnxModel(path, tuple(inputs), tuple(outputs),
                     stats={"nodes": len(written.graph.node), "opset": opset,
                            "exporter": "fused" if fused else "torchscript",
                            "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
                            "greedy_tokens_checked": len(want), "max_abs_logit_diff_vs_torch": diff,
                            "external_data": external})


def _trace_generation(model, path: Path, layers: int, kv_heads: int, head_dim: int, outputs: list[str], opset: int,
                      ctx: BuildContext) -> list[str]:
    """The TorchScript trace of the tensor-only wrapper; returns the graph's input names."""
    import torch

    keep = keeps_logits(model)
    wrapper = generation_wrapper(model, layers, keep=keep)
    sample = sample_inputs(model, layers, kv_heads, head_dim, keep=keep)
    inputs = graph_inputs(layers, keep)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "kept" if keep else "sequence"}}
    axes.update({name: {0: "batch", 2: "past"} for name in past_names(layers)})
    axes.update({name: {0: "batch", 2: "total"} for name in present_names(layers)})
    try:
        with torch.inference_mode():
            torch.onnx.export(wrapper, sample, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
    except Exception as exc:  # exporters raise anything; the first line is what the user needs
        raise ExportError(f"ONNX export of {ctx.source.model_type} for generation failed: "
                          f"{first_line(exc)}") from exc
    return inputs


def _greedy_check(model, tokenizer, path, tokens: int, release=None) -> tuple[list[int], list[int], float]:
    """PyTorch `generate` vs the runtime's ONNX Runtime decoder over the graph (`model`, `release`: see
    `greedy_check`)."""
    import gc

    from hfexport.runtime.backends.onnxruntime import open_session

    opened = []

    def open_decoder():
        opened.append(open_session(path, {"execution_providers": ["CPUExecutionProvider"]}).decoder())
        return opened[-1]

    try:
        return greedy_check(model, tokenizer, open_decoder, tokens, past_window=True, release=release)
    finally:
        opened.clear()  # the session holds the graph's weights: gone before the next pass opens them
        gc.collect()
