"""Graph optimisation with ONNX Runtime's transformer fusions (onnxruntime.transformers.optimizer).

The fused operators (Attention, SkipLayerNormalization, BiasGelu, ...) are ONNX Runtime contrib ops:
the result runs on ONNX Runtime only, which is what the onnxruntime targets deploy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hfexport.artifacts import OnnxModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import ExportError, PlanError
from hfexport.passes.base import Pass, PassConfig

# Hugging Face model_type -> the ORT optimizer model type whose fusion patterns match its graph.
FUSION_MODEL_TYPES = {
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "distilbert": "bert",
    "electra": "bert", "mpnet": "bert", "albert": "bert", "ernie": "bert", "deberta": "bert",
    "gpt2": "gpt2", "bart": "bart", "t5": "t5", "vit": "vit",
}  # fmt: skip


class OptimizeConfig(PassConfig):
    fusions: bool = Field(True, description="apply ONNX Runtime's transformer fusions")
    model_type: str | None = Field(None, description="ORT optimizer model type; inferred from the config")
    # NOTE: 0 keeps the file portable (fusions only); ONNX Runtime applies its own level-"all" rewrites,
    # which are specific to the CPU they run on, when the bundle's session starts.
    level: int = Field(0, ge=0, le=1, description="ORT basic graph rewrites baked into the file (0 or 1)")
    # "fused": one Attention op that holds the Q/K/V projection, so MatMul-only int8 leaves it in fp32.
    # "unfused_projections": MultiHeadAttention for the core; Q, K and V stay separate MatMuls that int8 reaches.
    attention: Literal["fused", "unfused_projections"] = "fused"


class OptimizePass(Pass[OptimizeConfig]):
    name = "optimize"
    summary = "ONNX Runtime transformer fusions (Attention, SkipLayerNorm, BiasGelu, ...)"
    consumes = OnnxModel
    produces = OnnxModel
    config_class = OptimizeConfig

    def check(self, plan: PlanContext) -> None:
        if plan.target.backend != "onnxruntime":
            raise PlanError(f"ONNX Runtime fusions need an onnxruntime target, not {plan.target.backend}")

    def run(self, artifact: OnnxModel, ctx: BuildContext) -> OnnxModel:
        from onnxruntime.transformers.optimizer import optimize_model

        config = ctx.source.config
        model_type = self.config.model_type or FUSION_MODEL_TYPES.get(ctx.source.model_type)
        heads = config.get("num_attention_heads") or config.get("n_heads") or 0
        hidden = config.get("hidden_size") or config.get("dim") or 0
        out = ctx.stage_dir(self.name) / "model.onnx"
        if not self.config.fusions or model_type is None:
            reason = "disabled by the recipe" if not self.config.fusions else (
                f"ONNX Runtime has no fusion patterns for model type {ctx.source.model_type!r}")
            _session_optimize(artifact, out)
            return OnnxModel(out, artifact.inputs, artifact.outputs,
                             stats={"nodes_before": artifact.stats.get("nodes"), "nodes": _count_nodes(out),
                                    "fused_operators": {}, "notes": [f"fusions skipped: {reason}"]})
        try:
            from onnxruntime.transformers.fusion_options import FusionOptions

            options = FusionOptions(model_type)
            options.use_multi_head_attention = self.config.attention == "unfused_projections"
            optimized = optimize_model(str(artifact.path), model_type=model_type, num_heads=heads,
                                       hidden_size=hidden, opt_level=self.config.level,
                                       optimization_options=options, use_gpu=ctx.target.device != "cpu")
        except Exception as exc:
            raise ExportError(f"ONNX Runtime optimisation failed: {str(exc).splitlines()[0]}") from exc
        fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
        optimized.save_model_to_file(str(out))
        return OnnxModel(out, artifact.inputs, artifact.outputs,
                         stats={"nodes_before": artifact.stats.get("nodes"), "nodes": _count_nodes(out),
                                "fused_operators": fused, "fusion_model_type": model_type})


def _count_nodes(path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _session_optimize(artifact: OnnxModel, out) -> None:
    """Hardware-independent (basic) ONNX Runtime rewrites only, saved to a new file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
