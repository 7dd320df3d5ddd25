"""The onnxruntime backend (targets cpu and cuda): ONNX graphs, ONNX Runtime's fusions and quantisers.

- export: TorchScript-traced ONNX (`_onnx/export.py`); an encoder graph, or for text generation one graph
  with the KV cache as inputs and outputs. Options: `ExportOnnxConfig` / `ExportOnnxGenerationConfig`.
- optimize: ONNX Runtime's transformer fusions (`_onnx/fusions.py`), for the GPU kernels on a cuda target.
- quantize, by what the recipe asks (the profile's `quantize:` section fills what it leaves open):
  - int8: dynamic or static QDQ, flavoured by the target's ISA preset (`_onnx/int8.py`);
  - weights_only int8/int4: MatMulNBits blocks, float activations, the LLM path (`_onnx/weight_only.py`),
    with `int4_top1_target` a measured int4/int8 split (`_onnx/int4_search.py`);
  - fp16: every float weight and operator in half precision, fp32 at the graph's edges (`_onnx/float16.py`),
    run after the fusions as ONNX Runtime's GPU recipe does.
- profile section: `OnnxRuntimeQuantize` in hfexport/profiles.py.

cuda is this backend with the CUDA execution provider first and fp16 among its precisions.
"""

from __future__ import annotations

from pathlib import Path

from hfexport.artifacts import Artifact, OnnxModel, TorchModel
from hfexport.backends._onnx import export as onnx_export
from hfexport.backends._onnx.float16 import Float16Settings, convert_float16
from hfexport.backends._onnx.fusions import fuse
from hfexport.backends._onnx.int4_search import SearchSettings
from hfexport.backends._onnx.int8 import Int8Settings, quantize_int8
from hfexport.backends._onnx.weight_only import WeightOnlySettings, quantize_weights_only
from hfexport.backends.base import Backend, search_windows, text_encoder, texts_encoder
from hfexport.backends.options import OptimizeConfig, QuantizeConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import PassConfig


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    title = "ONNX Runtime"
    quantizer = "ONNX Runtime quantiser"
    artifact = OnnxModel
    quantize_options = frozenset({"per_channel", "reduce_range", "op_types", "calibration_method", "accuracy_level",
                                  "int4_top1_target", "float_fallback", "float_weight_storage", "symmetric_weights",
                                  "attention_int8", "smooth_quant_alpha"})

    def export_config_class(self, generative: bool) -> type[PassConfig]:
        return onnx_export.ExportOnnxGenerationConfig if generative else onnx_export.ExportOnnxConfig

    def export(self, config, generative: bool, artifact: TorchModel, ctx: BuildContext, out_dir: Path) -> OnnxModel:
        if _dual_encoder(ctx):  # CLIP, SigLIP: the image and the text tower as two graphs
            from hfexport.backends._dual_encoder import export_onnx

            return export_onnx(config, artifact, ctx, out_dir)
        if generative and ctx.source.config.get("is_encoder_decoder"):  # T5, BART, Marian: two graphs
            from hfexport.backends._onnx.seq2seq import export_seq2seq

            return export_seq2seq(config, artifact, ctx, out_dir)
        if generative:
            return onnx_export.export_generation(config, artifact, ctx, out_dir)
        return onnx_export.export_encoder(config, artifact, ctx, out_dir)

    def optimize(self, config: OptimizeConfig, artifact: Artifact, ctx: BuildContext, out_dir: Path) -> OnnxModel:
        if getattr(artifact, "parts", ()):  # an encoder-decoder: each graph on its own
            from hfexport.backends._seq2seq_graph import for_each_graph

            return for_each_graph(artifact, out_dir, lambda one, folder: self.optimize(config, one, ctx, folder),
                                  "optimize")
        return fuse(artifact, out_dir / "model.onnx", hf_model_type=ctx.source.model_type, hf_config=ctx.source.config,
                    fusions=config.fusions, model_type=config.model_type, level=config.level,
                    attention=config.attention, use_gpu=ctx.target.device != "cpu")

    def check_quantize(self, config: QuantizeConfig, plan: PlanContext) -> None:
        """What the generic checks leave: float_fallback ranks MatMuls on encoder feeds, not a decoder's."""
        from hfexport.tasks import get_task

        if config.float_fallback and get_task(plan.source.task).generative:
            raise PlanError(f"float_fallback ranks MatMuls on encoder inputs; {plan.source.task} graphs take a KV "
                            f"cache (remove float_fallback)")

    def quantize_settings(self, config: QuantizeConfig, plan: PlanContext | BuildContext):
        excluded = tuple(config.exclude_nodes)
        if config.precision == "fp16":
            return Float16Settings(exclude_nodes=excluded)
        if config.weights_only:
            return WeightOnlySettings(
                precision=config.precision, group_size=config.group_size or 128,
                lm_head_precision=config.lm_head_precision or "fp32",
                embedding_precision=config.embedding_precision or "fp32",
                accuracy_level=4 if config.accuracy_level is None else config.accuracy_level,
                exclude_nodes=excluded, int4_top1_target=config.int4_top1_target,
                symmetric_weights=bool(config.symmetric_weights))
        preset = plan.target.quant_preset()
        return Int8Settings(
            mode=config.mode, op_types=tuple(config.op_types),
            per_channel=preset.per_channel if config.per_channel is None else config.per_channel,
            reduce_range=preset.reduce_range if config.reduce_range is None else config.reduce_range,
            weight_type=preset.weight_type, activation_type=preset.activation_type, isa=preset.isa,
            exclude_nodes=excluded, calibration_method=config.calibration_method,
            calibration_samples=config.calibration_samples, symmetric_activations=config.symmetric_activations,
            float_fallback=config.float_fallback, float_weight_storage=config.float_weight_storage or "fp32",
            attention_int8=config.attention_int8 or False, smooth_quant_alpha=config.smooth_quant_alpha or 0.0)

    def quantize(self, settings, artifact: Artifact, ctx: BuildContext, out_dir: Path) -> OnnxModel:
        if getattr(artifact, "parts", ()):  # an encoder-decoder: each graph on its own
            from hfexport.backends._seq2seq_graph import for_each_graph

            if _dual_encoder(ctx) and isinstance(settings, Int8Settings):  # each tower calibrated on its own inputs
                from hfexport.backends._dual_encoder import quantize_towers

                def one_tower(graph, folder, items, encode):
                    out = folder / "model.onnx"
                    stats = quantize_int8(settings, graph.path, out, items, encode)
                    return OnnxModel(out, graph.inputs, graph.outputs, stats=stats)

                return quantize_towers(artifact, out_dir, ctx, one_tower)
            if getattr(settings, "int4_top1_target", None) is not None or getattr(settings, "mode", "") == "static":
                from hfexport.errors import ExportError

                raise ExportError("int4_top1_target and static int8 calibrate on decoder-LLM feeds; an "
                                  "encoder-decoder takes dynamic int8 or weights_only without the search")
            return for_each_graph(artifact, out_dir, lambda one, folder: self.quantize(settings, one, ctx, folder),
                                  "quantize")
        out = out_dir / "model.onnx"
        if isinstance(settings, Float16Settings):
            stats = convert_float16(artifact.path, out, keep_nodes=list(settings.exclude_nodes))
        elif isinstance(settings, WeightOnlySettings):
            stats = quantize_weights_only(
                artifact.path, out, bits=settings.bits, group_size=settings.group_size,
                lm_head_precision=settings.lm_head_precision, embedding_precision=settings.embedding_precision,
                accuracy_level=settings.accuracy_level, exclude_nodes=list(settings.exclude_nodes),
                search=_search_settings(settings, ctx), symmetric=settings.symmetric_weights)
        else:
            encode = text_encoder(ctx, artifact.inputs)
            check = _fidelity_check(ctx, artifact.inputs) if settings.attention_int8 == "auto" else None
            stats = quantize_int8(settings, artifact.path, out, ctx.calibration_texts, encode, check)
        return OnnxModel(out, artifact.inputs, artifact.outputs, stats=stats)


def _fidelity_check(ctx: BuildContext, names):
    """The task's fidelity on calibration text against the float graph, for the recipe's gates; None for a task
    that cannot be compared on plain calibration inputs (attention_int8: auto then keeps Attention float)."""
    from hfexport.backends._onnx.int8_attention import FidelityCheck, text_sets
    from hfexport.build.manifest import model_info
    from hfexport.tasks import get_task

    spec = get_task(ctx.source.task)
    if not spec.calibration_fidelity or ctx.modality != "text":
        return None
    meta = model_info(ctx.source, ctx.hf_tokenizer())
    return FidelityCheck(
        sets=lambda: text_sets(ctx.calibration_texts, texts_encoder(ctx, names), ctx.recipe.evaluation.batch_size),
        comparable=lambda outputs, feeds: spec.comparable(outputs, feeds.get("attention_mask"),
                                                          feeds.get("input_ids"), None, meta),
        fidelity=spec.fidelity, thresholds=spec.thresholds(ctx.recipe.gates.model_dump()), note=ctx.progress.info)


def _dual_encoder(ctx: BuildContext) -> bool:
    from hfexport.tasks import get_task

    return bool(getattr(get_task(ctx.source.task), "dual_encoder", False))


def _search_settings(settings: WeightOnlySettings, ctx: BuildContext) -> SearchSettings | None:
    if settings.int4_top1_target is None:
        return None
    windows, threads = search_windows(ctx, settings.int4_top1_target,
                                      "int4/int8 split: sensitivity of each int4 matrix")
    return SearchSettings(windows, settings.int4_top1_target, threads)
