"""Graph optimisation with ONNX Runtime's transformer fusions (onnxruntime.transformers.optimizer).

The fused operators (Attention, SkipLayerNormalization, BiasGelu, ...) are ONNX Runtime contrib ops:
the result runs on ONNX Runtime only, which is what the onnxruntime targets deploy. For the CPU provider the
residual LayerNorm is written back as standard ops (skip_layer_norm.py: faster there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from hfexport.artifacts import OnnxModel
from hfexport.backends._onnx.external import PROTOBUF_LIMIT, graph_bytes
from hfexport.errors import ExportError, first_line

# Hugging Face model_type -> the ORT optimizer model type whose fusion patterns match its graph.
FUSION_MODEL_TYPES = {
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "distilbert": "bert",
    "electra": "bert", "mpnet": "bert", "albert": "bert", "ernie": "bert", "deberta": "bert",
    "gpt2": "gpt2", "bart": "bart", "t5": "t5", "vit": "vit",
}  # fmt: skip


def fuse(artifact: OnnxModel, out: Path, *, hf_model_type: str, hf_config: dict, fusions: bool,
         model_type: str | None, level: int, attention: Literal["fused", "unfused_projections"],
         use_gpu: bool) -> OnnxModel:
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = model_type or FUSION_MODEL_TYPES.get(hf_model_type)
    heads = hf_config.get("num_attention_heads") or hf_config.get("n_heads") or 0
    hidden = hf_config.get("hidden_size") or hf_config.get("dim") or 0
    if not fusions or model_type is None:
        reason = "disabled by the recipe" if not fusions else (
            f"ONNX Runtime has no fusion patterns for model type {hf_model_type!r}")
        _session_optimize(artifact, out)
        return OnnxModel(out, artifact.inputs, artifact.outputs,
                         stats={"nodes_before": artifact.stats.get("nodes"), "nodes": _count_nodes(out),
                                "fused_operators": {}, "notes": [f"fusions skipped: {reason}"]})
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions

        options = FusionOptions(model_type)
        options.use_multi_head_attention = attention == "unfused_projections"
        optimized = optimize_model(str(artifact.path), model_type=model_type, num_heads=heads, hidden_size=hidden,
                                   opt_level=level, optimization_options=options, use_gpu=use_gpu)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime optimisation failed: {first_line(exc)}") from exc
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    extra = {}
    if not use_gpu:  # the CPU provider's SkipLayerNormalization is slower than the ops it fuses (0195)
        from hfexport.backends._onnx.skip_layer_norm import FUSION, unfuse_skip_layer_norm

        unfused = unfuse_skip_layer_norm(optimized.model)
        if unfused:
            fused.pop("SkipLayerNormalization", None)
            extra = {"skip_layer_norm_unfused": unfused, "session_disabled_optimizers": [FUSION]}
    # Past 2 GB the fused graph keeps its weights in one sidecar, `model.onnx.data`, as the export's.
    optimized.save_model_to_file(str(out), use_external_data_format=graph_bytes(artifact.path) > PROTOBUF_LIMIT)
    return OnnxModel(out, artifact.inputs, artifact.outputs,
                     stats={"nodes_before": artifact.stats.get("nodes"), "nodes": _count_nodes(out),
                            "fused_operators": fused, "fusion_model_type": model_type, **extra})


def _count_nodes(path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _session_optimize(artifact: OnnxModel, out) -> None:
    """Hardware-independent (basic) ONNX Runtime rewrites only, saved to a new file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    if graph_bytes(artifact.path) > PROTOBUF_LIMIT:  # ORT writes the weights past 2 GB beside the graph
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         out.name + ".data")
    ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
