"""PyTorch -> OpenVINO IR for encoder-decoder models (T5, BART, Marian): the same two graphs as the ONNX export
(backends/_seq2seq_graph.py), traced to ONNX and converted with `openvino.convert_model`, then checked by greedy
decoding against PyTorch `generate` through the OpenVINO runtime.

NOTE: converted from the traced ONNX pair rather than from torch: the ONNX tracer drops the cache's empty
starting tensor, which OpenVINO's torch frontend would otherwise have to be tricked around (`past_4d`), and
both targets then deploy the very same graph structure. The decoder keeps explicit past/present ports: the
stateful transformation (text generation's default) would also have to carry the cross-attention K/V.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hfexport.artifacts import OpenVINOModel, TorchModel
from hfexport.backends import _seq2seq_graph as s2s
from hfexport.backends._onnx.seq2seq import check_pair, export_onnx_pair, speech_stats
from hfexport.backends._openvino.export import _name_ports
from hfexport.context import BuildContext
from hfexport.errors import ExportError

_OPSET = 17
_CHECK_SESSION = {"openvino": {"inference_precision": "f32"}}


def export_seq2seq(config, artifact: TorchModel, ctx: BuildContext, out_dir: Path) -> OpenVINOModel:
    import openvino as ov

    model = ctx.torch_module(artifact.path)
    paths = []
    try:
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            encoder_onnx, decoder_onnx, layers = export_onnx_pair(model, Path(scratch), _OPSET)
            speech = s2s.is_speech(model)
            names = {encoder_onnx: (s2s.encoder_inputs(model), s2s.cross_names(layers)),
                     decoder_onnx: (s2s.decoder_input_names(layers, speech), ["logits", *s2s.present_names(layers)])}
            for onnx_path, (inputs, outputs) in names.items():
                ir = ov.convert_model(str(onnx_path))
                # a port holds every name the ONNX graph gave its tensor; the runtime reads the one it feeds by
                _name_ports(ir, inputs, outputs)
                path = out_dir / f"{onnx_path.stem}.xml"
                ov.save_model(ir, str(path), compress_to_fp16=config.compress_to_fp16)
                paths.append((path, len(ir.get_ops())))
    except Exception as exc:  # the exporters raise anything; the first line is what the user needs
        raise ExportError(f"OpenVINO export of {ctx.source.model_type} (encoder-decoder) failed: "
                          f"{str(exc).splitlines()[0]}") from exc
    (encoder_path, encoder_nodes), (decoder_path, decoder_nodes) = paths
    want, got, diff = check_pair(model, ctx, encoder_path, decoder_path, config.check_tokens,
                                 "openvino", _CHECK_SESSION)
    s2s.raise_on_mismatch(want, got, diff, "OpenVINO")
    return OpenVINOModel(encoder_path, s2s.encoder_inputs(model), tuple(s2s.cross_names(layers)),
                         stats={"nodes": encoder_nodes + decoder_nodes, "layers": layers, "stateful": False,
                                "cross_attention": "cached (projected once by the encoder graph)",
                                "weights": "fp16" if config.compress_to_fp16 else "fp32",
                                "greedy_tokens_checked": len(want), "max_abs_logit_diff_vs_torch": diff,
                                "graphs": {encoder_path.stem: {"nodes": encoder_nodes},
                                           decoder_path.stem: {"nodes": decoder_nodes}}, **speech_stats(model, ctx)},
                         parts=(decoder_path.name,))
