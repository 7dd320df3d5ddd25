"""The openvino backend: OpenVINO IR, quantised by NNCF.

- export: `openvino.convert_model` (`_openvino/export.py`); an encoder IR, or for text generation a
  stateful IR that keeps the KV cache inside the request (`_openvino/stateful.py`). Options:
  `ExportOpenVINOConfig` / `ExportOpenVINOGenerationConfig`.
- optimize: nothing at build time. OpenVINO fuses the graph when it compiles it for the device, at load;
  the plan leaves the step out and says so (docs/decisions/0040-optimize-on-openvino-is-left-out.md).
- quantize (`_openvino/nncf.py`), by what the recipe asks (the profile's `quantize:` section fills what it
  leaves open): int8 `mode: static` is NNCF post-training quantisation calibrated on text; `mode: dynamic`
  or `weights_only: true` is NNCF weight compression (int8 per channel, int4 in groups with `ratio`).
  fp16 is not a quantiser step here: OpenVINO picks f16 when it compiles (`openvino.inference_precision`).
  A step's `inference_precision` is the compute precision of the bundle it makes (recorded in the pass's
  stats, written into the manifest's `target.session.openvino`): the target's int4 LLMs compute `auto`.
- profile section: `OpenVINOQuantize` in hfexport/profiles.py (its runtime options: `OpenVINOOptions`).
"""

from __future__ import annotations

from pathlib import Path

from hfexport.artifacts import Artifact, OpenVINOModel, TorchModel
from hfexport.backends._openvino import export as ov_export
from hfexport.backends._openvino.nncf import (
    DEFAULT_INT4_GROUP_SIZE,
    PostTrainingSettings,
    WeightCompressionSettings,
    quantize_openvino,
)
from hfexport.backends.base import Backend, search_windows, text_encoder
from hfexport.backends.options import QuantizeConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import PassConfig


class OpenVINOBackend(Backend):
    name = "openvino"
    title = "OpenVINO"
    quantizer = "NNCF"
    artifact = OpenVINOModel
    quantize_options = frozenset({"smooth_quant_alpha", "ratio", "int4_top1_target", "inference_precision"})
    optimize_skipped = "OpenVINO fuses the graph when it compiles it for the device, so there is nothing to do at build time"

    def export_config_class(self, generative: bool) -> type[PassConfig]:
        return ov_export.ExportOpenVINOGenerationConfig if generative else ov_export.ExportOpenVINOConfig

    def export(self, config, generative: bool, artifact: TorchModel, ctx: BuildContext,
               out_dir: Path) -> OpenVINOModel:
        if _dual_encoder(ctx):  # CLIP, SigLIP: the image and the text tower as two graphs
            from hfexport.backends._dual_encoder import export_openvino

            return export_openvino(config, artifact, ctx, out_dir)
        if generative and ctx.source.config.get("is_encoder_decoder"):  # T5, BART, Marian: two graphs
            from hfexport.backends._openvino.seq2seq import export_seq2seq

            return export_seq2seq(config, artifact, ctx, out_dir)
        if generative:
            return ov_export.export_generation(config, artifact, ctx, out_dir)
        return ov_export.export_encoder(config, artifact, ctx, out_dir)

    def check_quantize(self, config: QuantizeConfig, plan: PlanContext) -> None:
        if config.smooth_quant_alpha is not None and config.mode == "dynamic":
            raise PlanError("smooth_quant_alpha: mode dynamic on openvino compresses weights only (activations "
                            "stay float); use it with mode: static")
        if config.precision == "fp16":
            raise PlanError(f"precision fp16 converts ONNX graphs; OpenVINO chooses f16 when it compiles "
                            f"(set openvino.inference_precision: f16 in target {plan.target.name!r})")
        int4_parts = "int4" in (config.precision, config.lm_head_precision, config.embedding_precision)
        if config.group_size is not None and not int4_parts:
            raise PlanError("group_size: NNCF compresses int8 weights per channel; groups are for int4")

    def quantize_settings(self, config: QuantizeConfig, plan: PlanContext | BuildContext):
        excluded = tuple(config.exclude_nodes)
        if config.weights_only or config.mode == "dynamic":
            # OpenVINO's CPU plugin quantises activations at run time where it pays: "dynamic" is weights only.
            return WeightCompressionSettings(
                precision=config.precision, group_size=config.group_size or DEFAULT_INT4_GROUP_SIZE,
                ratio=config.ratio, lm_head_precision=config.lm_head_precision,
                embedding_precision=config.embedding_precision, exclude_nodes=excluded,
                weights_only=config.weights_only, int4_top1_target=config.int4_top1_target,
                inference_precision=config.inference_precision)
        return PostTrainingSettings(calibration_samples=config.calibration_samples,
                                    smooth_quant_alpha=config.smooth_quant_alpha,
                                    symmetric_activations=config.symmetric_activations, exclude_nodes=excluded,
                                    inference_precision=config.inference_precision)

    def quantize(self, settings, artifact: Artifact, ctx: BuildContext, out_dir: Path) -> OpenVINOModel:
        if getattr(artifact, "parts", ()):  # an encoder-decoder: each graph on its own, weights only
            from hfexport.backends._seq2seq_graph import for_each_graph

            if _dual_encoder(ctx):  # each tower calibrated on its own inputs (images; text)
                from hfexport.backends._dual_encoder import quantize_towers

                return quantize_towers(artifact, out_dir, ctx, lambda one, folder, items, encode: quantize_openvino(
                    settings, one, folder, *((items, encode) if isinstance(settings, PostTrainingSettings) else ())))
            if isinstance(settings, PostTrainingSettings):
                from hfexport.errors import ExportError

                raise ExportError("NNCF post-training int8 calibrates on text feeds; an encoder-decoder's decoder "
                                  "takes weight compression (weights_only: true)")
            if getattr(settings, "int4_top1_target", None) is not None:
                # The next-token check runs decoder-only graphs: unchecked, _compress_weights keeps them int8.
                ctx.progress.info("int4 LM head check: an encoder-decoder is not checked; its LM head and "
                                  "embedding stay int8")
            return for_each_graph(artifact, out_dir, lambda one, folder: quantize_openvino(settings, one, folder),
                                  "quantize")
        if isinstance(settings, PostTrainingSettings):
            return quantize_openvino(settings, artifact, out_dir, ctx.calibration_texts,
                                     text_encoder(ctx, artifact.inputs))
        windows = None
        if getattr(settings, "int4_top1_target", None) is not None:
            windows = search_windows(ctx, settings.int4_top1_target, "int4 LM head and embedding: next-token check")
        return quantize_openvino(settings, artifact, out_dir, windows=windows)


def _dual_encoder(ctx: BuildContext) -> bool:
    from hfexport.tasks import get_task

    return bool(getattr(get_task(ctx.source.task), "dual_encoder", False))
