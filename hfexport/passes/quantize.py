"""int8 quantisation, and weight-only int8/int4 for LLMs. The recipe says what; the target says how.

On onnxruntime targets: dynamic quantisation (weights int8 per channel, activations quantised on the
fly) is the safe default; static QDQ with calibration text is an option. Both quantise MatMul only
by default (see `op_types`), and the build's fidelity gates stop any configuration that loses the
model's behaviour (static QDQ with ORT's defaults measured mean cosine 0.35 on all-MiniLM-L6-v2).

`weights_only: true` is the LLM path: MatMul weights in int4 or int8 blocks of `group_size` with a
scale (and zero point) per block, activations stay float (ONNX Runtime's MatMulNBits; see
hfexport/passes/_weight_only.py). The embedding table and the LM head keep float unless
`embedding_precision` / `lm_head_precision` say otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hfexport.artifacts import OnnxModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import ExportError, PlanError
from hfexport.passes.base import Pass, PassConfig


class QuantizeConfig(PassConfig):
    precision: Literal["int8", "int4"] = "int8"
    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool | None = Field(None, description="default: the target's ISA preset")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: the target's ISA preset")
    # NOTE: MatMul only by default. On all-MiniLM-L6-v2 (320 held-out texts), quantising every op
    # (fused Attention and EmbedLayerNorm too) ran 1.4x faster than MatMul-only but dropped min cosine
    # to 0.973; MatMul-only kept 0.9944 mean / 0.9781 min. Add "Attention" here to trade fidelity for speed.
    op_types: list[str] = Field(default_factory=lambda: ["MatMul"], min_length=1,
                                description="operator types to quantise")
    exclude_nodes: list[str] = Field(default_factory=list, description="node names kept in float")
    # NOTE: minmax only: onnxruntime 1.32's entropy and percentile calibrators failed on the fused BERT
    # graph ("Histogram has not been collected"), so they are not offered until that works.
    calibration_method: Literal["minmax"] = "minmax"
    calibration_samples: int = Field(100, ge=1, description="static mode: calibration texts used")
    symmetric_activations: bool = False
    # Weight-only (LLMs). Fields below apply only with weights_only: true; check() rejects them otherwise.
    weights_only: bool = Field(False, description="quantise MatMul weights only; activations stay float")
    group_size: Literal[32, 64, 128] | None = Field(None, description="weights per scale; default 128")
    lm_head_precision: Literal["fp32", "int8", "int4"] | None = Field(None, description="default fp32")
    embedding_precision: Literal["fp32", "int4"] | None = Field(
        None, description="default fp32; int4 is the only quantised embedding ONNX Runtime's Gather kernel has")
    # NOTE: measured on the bench model (scripts/bench_generation.py, int4 group 32, 2 threads, one process):
    # accuracy_level 4 decoded 971 tokens/s and 0 only 22 (TTFT 3.6 vs 49 ms), with the same top-1
    # agreement (0.494 / 0.490); a loaded machine gave 218 vs 14.
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits compute type: 4 = int8 activations inside the kernel (fastest on CPU), "
                          "0 = float; default 4")

    def weight_only_settings(self) -> dict:
        return {"bits": 4 if self.precision == "int4" else 8, "group_size": self.group_size or 128,
                "lm_head_precision": self.lm_head_precision or "fp32",
                "embedding_precision": self.embedding_precision or "fp32",
                "accuracy_level": 4 if self.accuracy_level is None else self.accuracy_level}


_WEIGHT_ONLY_FIELDS = ("group_size", "lm_head_precision", "embedding_precision", "accuracy_level")


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    summary = "int8 weights (dynamic, or static QDQ with calibration), flavoured by the target ISA"
    consumes = OnnxModel
    produces = OnnxModel
    config_class = QuantizeConfig

    def describe(self) -> str:
        if self.config.weights_only:
            return f"quantize({self.config.precision}, weights only, group {self.config.weight_only_settings()['group_size']})"
        return f"quantize({self.config.precision}, {self.config.mode})"

    def check(self, plan: PlanContext) -> None:
        config = self.config
        if config.weights_only:
            if config.mode != "dynamic":
                raise PlanError("mode: static calibrates activations, but weights_only: true leaves them float; "
                                "remove mode or weights_only")
            if config.precision not in plan.target.weight_only_precisions:
                raise PlanError(
                    f"precision {config.precision!r} with weights_only is not supported by target "
                    f"{plan.target.name!r} (weight_only_precisions: {', '.join(plan.target.weight_only_precisions) or 'none'})"
                )
            if plan.target.backend != "onnxruntime":
                raise PlanError(f"MatMulNBits weight-only quantisation needs an onnxruntime target, not "
                                f"{plan.target.backend}")
            return
        stray = [f for f in _WEIGHT_ONLY_FIELDS if f in config.model_fields_set]
        if stray:
            raise PlanError(f"{stray[0]} applies to weight-only quantisation; add weights_only: true or remove it")
        if config.precision == "int4":
            raise PlanError("precision: int4 needs weights_only: true (int4 exists as weight-only MatMulNBits only)")
        if self.config.precision not in plan.target.precisions:
            raise PlanError(
                f"precision {self.config.precision!r} is not supported by target {plan.target.name!r} "
                f"(supports: {', '.join(plan.target.precisions)})"
            )
        if plan.target.backend != "onnxruntime":
            raise PlanError(f"ONNX Runtime quantisation needs an onnxruntime target, not {plan.target.backend}")
        if self.config.mode == "static" and not plan.has_calibration_data:
            raise PlanError("mode: static needs calibration data (--calibration-data)")

    def run(self, artifact: OnnxModel, ctx: BuildContext) -> OnnxModel:
        import onnx
        from onnxruntime.quantization import QuantType

        if self.config.weights_only:
            from hfexport.passes._weight_only import quantize_weights_only

            out = ctx.stage_dir(self.name) / "model.onnx"
            stats = quantize_weights_only(artifact.path, out, exclude_nodes=self.config.exclude_nodes,
                                          **self.config.weight_only_settings())
            return OnnxModel(out, artifact.inputs, artifact.outputs, stats=stats)

        preset = ctx.target.quant_preset()
        per_channel = preset.per_channel if self.config.per_channel is None else self.config.per_channel
        reduce_range = preset.reduce_range if self.config.reduce_range is None else self.config.reduce_range
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        out = ctx.stage_dir(self.name) / "model.onnx"
        # The fused graph's contrib ops lack type information; without a default the quantizer fails
        # with "Unable to find data type for weight_name".
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        settings = {"isa": preset.isa, "per_channel": per_channel, "reduce_range": reduce_range,
                    "weight_type": preset.weight_type, "mode": self.config.mode}
        try:
            if self.config.mode == "dynamic":
                from onnxruntime.quantization import quantize_dynamic

                quantize_dynamic(str(artifact.path), str(out), op_types_to_quantize=self.config.op_types,
                                 per_channel=per_channel, reduce_range=reduce_range,
                                 weight_type=types[preset.weight_type],
                                 nodes_to_exclude=self.config.exclude_nodes, extra_options=extra)
            else:
                self._static(artifact, out, ctx, per_channel, reduce_range, preset, types, extra, settings)
        except (ExportError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ExportError(f"int8 quantisation failed: {str(exc).splitlines()[0]}") from exc
        graph = onnx.load(str(out), load_external_data=False).graph
        quantized_ops = sum(1 for n in graph.node if n.op_type in _INT8_OPS)
        return OnnxModel(out, artifact.inputs, artifact.outputs,
                         stats={"nodes": len(graph.node), "quantized_nodes": quantized_ops, **settings})

    def _static(self, artifact, out, ctx, per_channel, reduce_range, preset, types, extra, settings) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        texts = ctx.calibration_texts[: self.config.calibration_samples]
        tokenizer = ctx.hf_tokenizer()
        names = list(artifact.inputs)
        max_length = ctx.source.max_length

        class Reader:
            def __init__(self):
                self._items = iter(texts)

            def get_next(self):
                text = next(self._items, None)
                if text is None:
                    return None
                encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
                return {n: encoded[n].astype("int64") for n in names}

        extra = dict(extra, ActivationSymmetric=self.config.symmetric_activations)
        settings.update(calibration_method=self.config.calibration_method, calibration_samples=len(texts))
        quantize_static(str(artifact.path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=self.config.op_types, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=types[preset.activation_type],
                        weight_type=types[preset.weight_type], nodes_to_exclude=self.config.exclude_nodes,
                        calibrate_method=CalibrationMethod.MinMax, extra_options=extra)


_INT8_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear",
             "QAttention", "DynamicQuantizeMatMul", "QEmbedLayerNormalization", "MatMulIntegerToFloat",
             "QGemm", "DynamicQuantizeLSTM"}  # fmt: skip
