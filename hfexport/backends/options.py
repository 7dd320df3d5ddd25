"""What a recipe may say to the `export`, `optimize` and `quantize` steps: the union of every backend's
options, typed. The backends read these; the planner refuses an option on a backend (or task) where it
means nothing, naming the field.

An option a recipe leaves unset is the target's to decide: `quantize` takes the defaults of the target
profile's `quantize:` section, `export` the backend's own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hfexport.passes.base import PassConfig


class ExportConfig(PassConfig):
    """Every export option; each backend's encoder or KV-cache export takes a subset (its own config class)."""

    exporter: Literal["torchscript", "dynamo"] = Field(
        "torchscript", description="onnxruntime encoders: torchscript (ORT fusions match its graph) or dynamo")
    opset: int | None = Field(None, ge=13, le=23, description="onnxruntime: defaults to the target's opset")
    tolerance: float = Field(1e-3, gt=0, description="encoders: max abs difference to PyTorch on the sample batch")
    check_tokens: int = Field(8, ge=1, le=256, description="text generation: greedy tokens that must equal "
                                                           "PyTorch's generate")
    stateful: bool = Field(True, description="openvino, text generation: the KV cache inside the InferRequest "
                                             "(false: explicit past/present ports)")
    compress_to_fp16: bool = Field(False, description="openvino: store float weights as fp16")
    precision: Literal["fp32", "bf16"] | None = Field(None, description="xla: compute precision (null = fp32)")


class OptimizeConfig(PassConfig):
    """ONNX Runtime's transformer fusions; a backend that fuses when it compiles (OpenVINO) takes none."""

    fusions: bool = Field(True, description="apply ONNX Runtime's transformer fusions")
    model_type: str | None = Field(None, description="ORT optimizer model type; inferred from the config")
    # NOTE: 0 keeps the file portable (fusions only); ONNX Runtime applies its own level-"all" rewrites,
    # which are specific to the CPU they run on, when the bundle's session starts.
    level: int = Field(0, ge=0, le=1, description="ORT basic graph rewrites baked into the file (0 or 1)")
    # "fused": one Attention op that holds the Q/K/V projection, so MatMul-only int8 leaves it in fp32.
    # "unfused_projections": MultiHeadAttention for the core; Q, K and V stay separate MatMuls that int8 reaches.
    attention: Literal["fused", "unfused_projections"] = "fused"


class QuantizeConfig(PassConfig):
    """precision, weights_only and group_size are the intent; the rest overrides the target's defaults."""

    precision: Literal["int8", "int4", "fp16"] = "int8"
    mode: Literal["dynamic", "static"] = Field("dynamic", description="default: the target's (static on openvino)")
    weights_only: bool = Field(False, description="low-bit weights, float activations (LLMs; no calibration)")
    group_size: Literal[32, 64, 128] | None = Field(None, description="weights_only: weights per scale (128)")
    # -- openvino (NNCF) ----------------------------------------------------------------------------
    ratio: float = Field(1.0, gt=0, le=1, description="openvino int4: share of layers in int4, the rest int8")
    # NOTE: measured per host kind (docs/decisions/0197-openvino-llm-int4-computes-bf16-where-native.md).
    inference_precision: Literal["f32", "bf16", "f16", "auto"] | None = Field(None, description=(
        "openvino: the precision OpenVINO computes the bundle this step makes in, over the target's "
        "openvino.inference_precision; auto = bf16 on a CPU with native bf16 (AVX512-BF16, AMX), f32 on other "
        "CPUs, resolved on each machine; default: the target's (auto for int4 LLMs)"))
    # NOTE: the openvino target sets 0.8 (docs/decisions/0046-nncf-post-training-settings.md).
    # NOTE: onnxruntime's is hfexport's own (docs/decisions/0196-smoothquant-for-dynamic-int8.md).
    smooth_quant_alpha: float | None = Field(None, ge=0, le=1, description=(
        "SmoothQuant strength on the int8 inputs a LayerNorm makes; openvino, mode static: NNCF's (null = NNCF's "
        "default, 0 = off); onnxruntime int8: folded into the LayerNorm and the weights that read it, measured "
        "on calibration text (null or 0 = off; the cpu target sets 0.5)"))
    # -- onnxruntime ----------------------------------------------------------------------------------
    per_channel: bool | None = Field(None, description="default: the target's ISA preset")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: the target's ISA preset")
    # NOTE: MatMul only by default (docs/decisions/0044-onnxruntime-int8-defaults.md); add "Attention" to
    # trade fidelity for speed.
    op_types: list[str] = Field(default_factory=lambda: ["MatMul"], min_length=1,
                                description="operator types to quantise")
    exclude_nodes: list[str] = Field(default_factory=list, description="node names kept in float")
    # NOTE: ranked by each MatMul's own int8 error (docs/decisions/0184-int8-float-fallback.md).
    float_fallback: int = Field(0, ge=0, description=(
        "int8: keep this many MatMuls in float, those with the largest int8 error measured on calibration data"))
    # NOTE: a quarter of the bytes at the same compute (docs/decisions/0185-float-weights-stored-int8.md).
    float_weight_storage: Literal["fp32", "int8"] | None = Field(None, description=(
        "int8, mode dynamic: how the weights left in float (fused attention's Q/K/V, embedding tables, "
        "float_fallback's MatMuls) are stored; int8 = one scale per row or column, turned back to float once "
        "when the session loads; default: the target's (int8 on cpu)"))
    # NOTE: measured per model (docs/decisions/0194-attention-int8-search.md).
    attention_int8: Literal["auto"] | bool | None = Field(None, description=(
        "int8, mode dynamic, onnxruntime: the fused Attention's Q/K/V projection in int8 too (QAttention); auto = "
        "every Attention the recipe's gates allow, measured against the float graph on calibration data, the "
        "largest int8 error back to float first (tasks without a calibration check keep them float); default: "
        "the target's (false on cpu)"))
    # NOTE: minmax only: the other calibrators failed on the fused BERT graph (docs/decisions/0044-...).
    calibration_method: Literal["minmax"] = "minmax"
    calibration_samples: int = Field(100, ge=1, description="static mode: calibration texts used")
    symmetric_activations: bool = False
    # -- both, weights_only: the two largest matrices of a small LLM ----------------------------------------
    # NOTE: unset and not in the target's `quantize.llm`, each backend keeps its own default: fp32 on
    # onnxruntime; on openvino NNCF's (the first and last weighted layers at int8 when the rest is int4).
    lm_head_precision: Literal["fp32", "int8", "int4"] | None = Field(
        None, description="weights_only: the LM head; default fp32 (onnxruntime), int8 (openvino)")
    embedding_precision: Literal["fp32", "int8", "int4"] | None = Field(
        None, description="weights_only: the token embedding table; default fp32 (onnxruntime), int8 (openvino); "
                          "onnxruntime reads uint8 or int4 tables (GatherBlockQuantized)")
    # NOTE: 4 decodes ~40x faster than 0 at the same agreement (docs/decisions/0047-matmulnbits-accuracy-level.md).
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="weights_only: MatMulNBits compute type, 4 = int8 inside the kernel (fastest on "
                          "CPU), 0 = float; default 4")
    symmetric_weights: bool | None = Field(
        None, description="weights_only on onnxruntime: MatMul blocks without zero points (the kernel's implied "
                          "midpoint), faster on CPU; default false")
    # NOTE: why a measured int4/int8 split: docs/decisions/0048-int4-int8-split-search.md.
    int4_top1_target: float | None = Field(None, gt=0, le=1, description=(
        "weights_only int4: keep a matrix in int4 only while top-1 next-token agreement with the float graph on "
        "calibration text stays >= this; the most sensitive (measured) fall back to int8. Text generation only"))

    @model_validator(mode="after")
    def _check(self) -> QuantizeConfig:
        if self.precision == "fp16":
            stray = sorted(self.model_fields_set - {"precision", "exclude_nodes"})
            if stray:
                raise ValueError(f"precision fp16 converts the whole graph and takes no quantiser options "
                                 f"(remove {', '.join(stray)})")
            return self
        if self.float_fallback and (self.precision != "int8" or self.weights_only):
            raise ValueError("float_fallback ranks int8 MatMuls: it needs precision: int8 without weights_only")
        if self.float_weight_storage is not None and (self.precision != "int8" or self.weights_only
                                                       or self.mode != "dynamic"):
            raise ValueError("float_weight_storage applies to int8 with mode: dynamic (static graphs keep their "
                             "QDQ pairs; weights_only stores every weight in low bits already)")
        if self.attention_int8 not in (None, False) and (self.precision != "int8" or self.weights_only
                                                          or self.mode != "dynamic"):
            raise ValueError("attention_int8 applies to int8 with mode: dynamic (QAttention quantises its input "
                             "on the fly)")
        if self.precision == "int4" and not self.weights_only:
            raise ValueError("precision int4 quantises weights only: add weights_only: true")
        if self.weights_only and self.mode == "static":
            raise ValueError("weights_only needs no calibration: drop mode: static")
        if self.group_size is not None and not self.weights_only:
            raise ValueError("group_size applies to weights_only quantisation")
        if self.precision != "int4" and self.ratio != 1.0:
            raise ValueError("ratio (share of layers in int4) applies to precision int4 only")
        if self.smooth_quant_alpha is not None and (self.weights_only or self.precision != "int8"):
            raise ValueError("smooth_quant_alpha applies to int8 activations (precision: int8 without "
                             "weights_only)")
        if self.symmetric_weights is not None and not self.weights_only:
            raise ValueError("symmetric_weights applies to weights_only quantisation (MatMulNBits)")
        if self.int4_top1_target is not None and (self.precision != "int4" or not self.weights_only):
            raise ValueError("int4_top1_target chooses int4 or int8 per weight matrix: it needs precision: int4 "
                             "with weights_only: true")
        return self

    def describe(self) -> str:
        """The label of the step as the recipe says it (a planned step shows its backend's scheme instead)."""
        if self.precision == "fp16":
            return "quantize(fp16)"
        if self.weights_only:
            split = f", int8 where top-1 < {self.int4_top1_target:g}" if self.int4_top1_target is not None else ""
            return f"quantize({self.precision}, weights only, group {self.group_size or 128}{split})"
        return f"quantize({self.precision}, {self.mode})"
