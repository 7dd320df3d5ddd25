"""int8 weights and activations with ONNX Runtime's quantisation tools: dynamic (activations quantised on the
fly) or static QDQ calibrated on text.

NOTE: dynamic, MatMul only and minmax calibration by default (docs/decisions/0044-onnxruntime-int8-defaults.md);
the build's fidelity gates stop any configuration that loses the model's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hfexport.backends._onnx.external import PROTOBUF_LIMIT, graph_bytes
from hfexport.backends._onnx.int8_attention import FidelityCheck
from hfexport.errors import ExportError, first_line


@dataclass(frozen=True)
class Int8Settings:
    """Everything ONNX Runtime's int8 quantiser is told, defaults and the ISA preset already applied."""

    mode: Literal["dynamic", "static"]
    op_types: tuple[str, ...]
    per_channel: bool
    reduce_range: bool
    weight_type: Literal["int8", "uint8"]
    activation_type: Literal["int8", "uint8"]  # static mode
    isa: str
    exclude_nodes: tuple[str, ...] = ()
    calibration_method: Literal["minmax"] = "minmax"  # static mode
    calibration_samples: int = 100  # static mode: at most this many calibration texts
    symmetric_activations: bool = False  # static mode
    float_fallback: int = 0  # MatMuls kept in float, the largest measured int8 error first (int8_fallback.py)
    float_weight_storage: Literal["fp32", "int8"] = "fp32"  # dynamic mode: stored_int8.py
    # dynamic mode: fused Attention in int8 too (True), per op_types (False), or where the gates allow (int8_attention.py)
    attention_int8: Literal["auto"] | bool = False
    smooth_quant_alpha: float = 0.0  # 0 = off; otherwise SmoothQuant on LayerNorm-made inputs first (smooth.py)
    precision: Literal["int8"] = "int8"

    def describe(self) -> str:
        return f"quantize(int8, {self.mode})"


def quantize_int8(settings: Int8Settings, source: Path, out: Path, texts: list[str] = (),
                  encode: Callable[[str], dict] | None = None, check: FidelityCheck | None = None) -> dict:
    """Quantise `source` into `out`; static mode calibrates on `texts`, each turned into feeds by `encode`;
    `attention_int8: auto` measures its candidates with `check` (without one, Attention stays float)."""
    import onnx
    from onnxruntime.quantization import QuantType

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    # The fused graph's contrib ops lack type information; without a default the quantizer fails
    # with "Unable to find data type for weight_name".
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    stats = {"isa": settings.isa, "per_channel": settings.per_channel, "reduce_range": settings.reduce_range,
             "weight_type": settings.weight_type, "mode": settings.mode}
    excluded = list(settings.exclude_nodes)
    smoothed = out.with_name(out.stem + ".smoothed.onnx")
    try:
        if settings.smooth_quant_alpha and texts and encode is not None:
            if graph_bytes(source) > PROTOBUF_LIMIT:
                stats["smooth_quant"] = "skipped: the graph is over 2 GB (weights in external data)"
            else:
                stats.update(_smooth(settings, source, smoothed, texts, encode))
                source = smoothed
                if check is not None and stats.get("smoothed_inputs"):
                    from hfexport.backends._onnx.int8_attention import SMOOTHED_MIN_MARGIN

                    check.min_margin = SMOOTHED_MIN_MARGIN
        if settings.float_fallback:
            from hfexport.backends._onnx.int8_fallback import rank_matmuls

            ranked = rank_matmuls(source, texts, encode, per_channel=settings.per_channel,
                                  reduce_range=settings.reduce_range)
            kept = [(name, error) for name, error in ranked if name not in excluded][: settings.float_fallback]
            excluded += [name for name, _ in kept]
            stats["float_fallback"] = [[name, round(error, 5)] for name, error in kept]
        if settings.mode == "dynamic":
            op_types = list(settings.op_types)
            if settings.attention_int8 is True and "Attention" not in op_types:
                op_types.append("Attention")

            def dynamic(path: Path, floated: list[str] = (), ops: list[str] = op_types) -> None:
                from onnxruntime.quantization import quantize_dynamic

                quantize_dynamic(str(source), str(path), op_types_to_quantize=ops,
                                 per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                                 weight_type=types[settings.weight_type],
                                 nodes_to_exclude=excluded + list(floated), extra_options=extra,
                                 use_external_data_format=graph_bytes(source) > PROTOBUF_LIMIT)

            if settings.attention_int8 == "auto" and "Attention" not in op_types:
                stats.update(_auto_attention(settings, source, out, texts, encode, check, excluded, dynamic,
                                             op_types))
            else:
                dynamic(out)
        else:
            used = list(texts)[: settings.calibration_samples]
            _static(settings, source, out, _Reader(used, encode), types, extra, excluded)
            stats.update(calibration_method=settings.calibration_method, calibration_samples=len(used))
        if settings.float_weight_storage == "int8":
            from hfexport.backends._onnx.stored_int8 import store_float_weights_int8

            stats["float_weights_stored_int8"] = store_float_weights_int8(out)
    except (ExportError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise ExportError(f"int8 quantisation failed: {first_line(exc)}") from exc
    finally:
        smoothed.unlink(missing_ok=True)
    graph = onnx.load(str(out), load_external_data=False).graph
    quantized_ops = sum(1 for n in graph.node if n.op_type in _INT8_OPS)
    return {"nodes": len(graph.node), "quantized_nodes": quantized_ops, **stats}


def _smooth(settings: Int8Settings, source: Path, out: Path, texts, encode) -> dict:
    """SmoothQuant on the inputs of the ops this int8 reaches: MatMul, and fused Attention when it may go int8."""
    from hfexport.backends._onnx.smooth import smooth_graph

    weighted = [op for op in ("MatMul", "Attention") if op in settings.op_types]
    if settings.attention_int8 in (True, "auto") and "Attention" not in weighted:
        weighted.append("Attention")
    used = list(texts)[:SMOOTH_TEXTS]
    try:  # a graph fed by another graph (an encoder-decoder's decoder) has no calibration feeds of its own
        encode(used[0])
    except (KeyError, ValueError, TypeError) as exc:
        return {"smooth_quant": f"skipped: no calibration feeds for this graph's inputs ({first_line(exc)})"}
    return smooth_graph(source, out, lambda: (encode(text) for text in used), settings.smooth_quant_alpha, weighted)


# Calibration texts whose channel maxima set the smoothing scales (each run alone through the float graph).
SMOOTH_TEXTS = 128


def _auto_attention(settings: Int8Settings, source: Path, out: Path, texts, encode, check, excluded: list[str],
                    dynamic, op_types: list[str]) -> dict:
    """`attention_int8: auto`: every Attention in int8 that the measured gates allow (int8_attention.py)."""
    from hfexport.backends._onnx.int8_attention import attention_nodes, choose

    candidates = [name for name in attention_nodes(source) if name not in excluded]
    if not candidates:
        dynamic(out)
        return {}
    if check is None:  # nothing to measure with (a task without calibration fidelity): float, as before
        dynamic(out)
        return {"attention_int8": "not measured for this task: kept float"}
    from hfexport.backends._onnx.int8_fallback import rank_matmuls

    ranked = rank_matmuls(source, texts, encode, per_channel=settings.per_channel,
                          reduce_range=settings.reduce_range, op_types=("Attention",))
    ranked = [(name, error) for name, error in ranked if name in candidates]
    with_attention = [*op_types, "Attention"]
    return choose(source, out, lambda path, floated: dynamic(path, floated, with_attention), check, ranked)


class _Reader:
    """ONNX Runtime's CalibrationDataReader: one text's feeds per call, tokenised as it is read."""

    def __init__(self, texts: Iterable[str], encode: Callable[[str], dict] | None):
        self._items, self._encode = iter(texts), encode

    def get_next(self):
        text = next(self._items, None)
        return None if text is None else self._encode(text)


def _static(settings: Int8Settings, source: Path, out: Path, reader: _Reader, types, extra,
            excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    extra = dict(extra, ActivationSymmetric=settings.symmetric_activations)
    quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
                    reduce_range=settings.reduce_range, activation_type=types[settings.activation_type],
                    weight_type=types[settings.weight_type], nodes_to_exclude=excluded,
                    calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                    use_external_data_format=graph_bytes(source) > PROTOBUF_LIMIT)


_INT8_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear",
             "QAttention", "DynamicQuantizeMatMul", "QEmbedLayerNormalization", "MatMulIntegerToFloat",
             "QGemm", "DynamicQuantizeLSTM"}  # fmt: skip
