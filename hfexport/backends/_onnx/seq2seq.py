"""PyTorch -> ONNX for encoder-decoder models (T5, BART, Marian): an encoder graph that also projects every
decoder layer's cross-attention K/V, and a decoder graph with the self-attention KV cache; the pair is checked
by greedy decoding against PyTorch `generate` before it is passed on. Layout: backends/_seq2seq_graph.py."""

from __future__ import annotations

from pathlib import Path

from hfexport.artifacts import OnnxModel, TorchModel
from hfexport.backends import _seq2seq_graph as s2s
from hfexport.context import BuildContext
from hfexport.errors import ExportError


def export_onnx_pair(model, out_dir: Path, opset: int) -> tuple[Path, Path, int]:
    """Trace both graphs into `out_dir` (encoder_model.onnx, decoder_model.onnx); returns their paths, layers."""
    import torch

    layers, heads, head_dim = s2s.layout(model)
    speech = s2s.is_speech(model)
    encoder_sample, decoder_sample = s2s.sample_inputs(model, layers, heads, head_dim)
    encoder_axes, decoder_axes = s2s.dynamic_axes(layers, speech)
    encoder_path, decoder_path = out_dir / f"{s2s.ENCODER_FILE}.onnx", out_dir / f"{s2s.DECODER_FILE}.onnx"
    with torch.inference_mode():
        torch.onnx.export(s2s.encoder_wrapper(model), encoder_sample, str(encoder_path),
                          input_names=list(s2s.encoder_inputs(model)), output_names=s2s.cross_names(layers),
                          dynamic_axes=encoder_axes, opset_version=opset, dynamo=False)
        torch.onnx.export(s2s.decoder_wrapper(model, layers), decoder_sample, str(decoder_path),
                          input_names=s2s.decoder_input_names(layers, speech),
                          output_names=["logits", *s2s.present_names(layers)], dynamic_axes=decoder_axes,
                          opset_version=opset, dynamo=False)
    return encoder_path, decoder_path, layers


def export_seq2seq(config, artifact: TorchModel, ctx: BuildContext, out_dir: Path) -> OnnxModel:
    import onnx

    model = ctx.torch_module(artifact.path)
    opset = config.opset or ctx.target.opset
    try:
        encoder_path, decoder_path, layers = export_onnx_pair(model, out_dir, opset)
    except Exception as exc:  # exporters raise anything; the first line is what the user needs
        raise ExportError(f"ONNX export of {ctx.source.model_type} (encoder-decoder) failed: "
                          f"{str(exc).splitlines()[0]}") from exc
    want, got, diff = check_pair(model, ctx, encoder_path, decoder_path, config.check_tokens,
                                 "onnxruntime", {"execution_providers": ["CPUExecutionProvider"]})
    s2s.raise_on_mismatch(want, got, diff, "ONNX")
    nodes = {path.stem: len(onnx.load(str(path), load_external_data=False).graph.node)
             for path in (encoder_path, decoder_path)}
    return OnnxModel(encoder_path, s2s.encoder_inputs(model), tuple(s2s.cross_names(layers)),
                     stats={"nodes": sum(nodes.values()), "opset": opset, "exporter": "torchscript",
                            "layers": layers, "cross_attention": "cached (projected once by the encoder graph)",
                            "greedy_tokens_checked": len(want), "max_abs_logit_diff_vs_torch": diff,
                            "graphs": {stem: {"nodes": n} for stem, n in nodes.items()}, **speech_stats(model, ctx)},
                     parts=(decoder_path.name,))


def check_pair(model, ctx: BuildContext, encoder_path: Path, decoder_path: Path, tokens: int, backend: str,
               session: dict) -> tuple[list[int], list[int], float]:
    """PyTorch `generate` vs the runtime's loop over the two graphs, opened by the runtime backend `backend`
    (a speech model: on a generated clip, through the runtime's log-mel features and Whisper prompt)."""
    from hfexport.runtime.backends import open_backend
    from hfexport.runtime.seq2seq import Seq2SeqGraphs

    encoder = open_backend(backend, encoder_path, session)
    graphs = Seq2SeqGraphs(encoder, encoder.open_sibling(decoder_path))
    if s2s.is_speech(model):
        from hfexport.backends._whisper import greedy_check

        return greedy_check(model, ctx.source.local_dir, ctx.tokenizer_dir, graphs, tokens)
    return s2s.greedy_check(model, ctx.hf_tokenizer(), graphs, tokens)


def speech_stats(model, ctx: BuildContext) -> dict:
    """A speech model's export records how far the runtime's log-mel features are from transformers'."""
    if not s2s.is_speech(model):
        return {}
    from hfexport.backends._whisper import log_mel_check

    return {"log_mel_max_abs_diff_vs_transformers": log_mel_check(ctx.tokenizer_dir)}
