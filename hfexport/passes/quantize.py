"""Low-bit quantisation. The recipe says `int8` (or `int4`); the target decides how.

- onnxruntime targets: ONNX Runtime dynamic or static QDQ int8, flavoured by the target's ISA preset
  (`_quantize_ort.py`).
- openvino targets: NNCF post-training int8 (`mode: static`) or weight compression to int8/int4
  (`mode: dynamic` / `weights_only: true`) (`_quantize_nncf.py`).

Options that only one backend has are rejected on the other by the planner, naming the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hfexport.artifacts import Artifact, OnnxModel, OpenVINOModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import Pass, PassConfig

# Fields that mean something to ONNX Runtime's quantiser only; an openvino target rejects them when set.
_ORT_ONLY = ("per_channel", "reduce_range", "op_types", "calibration_method")


class QuantizeConfig(PassConfig):
    precision: Literal["int8", "int4"] = "int8"
    mode: Literal["dynamic", "static"] = "dynamic"
    weights_only: bool = Field(False, description="openvino: compress weights only, no calibration")
    group_size: int | None = Field(None, ge=8, description="int4: weights per quantisation group (default 128)")
    ratio: float = Field(1.0, gt=0, le=1, description="int4: share of layers in int4, the rest in int8")
    # NOTE: NNCF's default for transformers is 0.95. On all-MiniLM-L6-v2 (256 held-out texts) 0.95 gave
    # min cosine 0.9867; 0.7 / 0.75 / 0.8 / 0.85 / 0.9 gave 0.9892 / 0.9910 / 0.9909 / 0.9887 / 0.9874
    # at the same mean (0.9975-0.9979); 0.5 fell to 0.9680. The openvino default recipe sets 0.8.
    smooth_quant_alpha: float | None = Field(None, ge=0, le=1, description=(
        "openvino, mode static: SmoothQuant strength on MatMul; null = NNCF's default, 0 = off"))
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

    @model_validator(mode="after")
    def _check(self) -> QuantizeConfig:
        if self.precision == "int4" and not self.weights_only:
            raise ValueError("precision int4 quantises weights only: add weights_only: true")
        if self.precision != "int4" and self.group_size is not None:
            raise ValueError("group_size applies to int4 weights only (int8 weights are per channel)")
        if self.precision != "int4" and self.ratio != 1.0:
            raise ValueError("ratio (share of layers in int4) applies to precision int4 only")
        if self.weights_only and self.mode == "static":
            raise ValueError("weights_only needs no calibration: drop mode: static")
        if self.smooth_quant_alpha is not None and (self.weights_only or self.mode != "static"):
            raise ValueError("smooth_quant_alpha applies to mode: static (post-training quantisation) only")
        return self


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    summary = "int8 (or int4 weights), done the target's way: ONNX Runtime int8 or NNCF on OpenVINO IR"
    consumes = (OnnxModel, OpenVINOModel)
    produces = None
    config_class = QuantizeConfig

    def describe(self) -> str:
        how = "weights only" if self.config.weights_only else self.config.mode
        return f"quantize({self.config.precision}, {how})"

    def check(self, plan: PlanContext) -> None:
        target, config = plan.target, self.config
        if config.precision not in target.precisions:
            raise PlanError(
                f"precision {config.precision!r} is not supported by target {target.name!r} "
                f"(supports: {', '.join(target.precisions)})"
            )
        if target.backend == "onnxruntime":
            if config.weights_only:
                raise PlanError("weights_only: ONNX Runtime int8 here quantises activations too; weight-only "
                                "compression is for openvino targets (drop weights_only)")
            if config.smooth_quant_alpha is not None:
                raise PlanError("smooth_quant_alpha: an NNCF option for openvino targets (remove it)")
        elif target.backend == "openvino":
            explicit = [name for name in _ORT_ONLY if name in config.model_fields_set]
            if explicit:
                raise PlanError(f"{explicit[0]}: an ONNX Runtime quantiser option; NNCF on target "
                                f"{target.name!r} decides it (remove {explicit[0]})")
        else:
            raise PlanError(f"no quantiser for backend {target.backend}")
        if config.mode == "static" and not config.weights_only and not plan.has_calibration_data:
            raise PlanError("mode: static needs calibration data (--calibration-data)")

    def run(self, artifact: Artifact, ctx: BuildContext) -> Artifact:
        out_dir = ctx.stage_dir(self.name)
        if isinstance(artifact, OpenVINOModel):
            from hfexport.passes._quantize_nncf import quantize_openvino

            return quantize_openvino(self.config, artifact, ctx, out_dir)
        from hfexport.passes._quantize_ort import quantize_onnx

        return quantize_onnx(self.config, artifact, ctx, out_dir)
