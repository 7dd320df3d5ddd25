"""int8 and int4 on openvino targets, with NNCF.

- `mode: static` (the openvino target's int8): NNCF post-training quantisation of weights and
  activations, calibrated on text (or images), with `ModelType.TRANSFORMER` where the graph has attention or
  layer norms, so attention's softmax and the layer norms stay in float and SmoothQuant moves activation
  outliers into the weights first; NNCF's default scheme for batch-normed convolutional networks.
  NOTE: the settings' measurements: docs/decisions/0046-nncf-post-training-settings.md.
- `mode: dynamic` or `weights_only: true`: NNCF weight compression (int8 per channel, or int4 in groups
  with `ratio` of the layers in int4 and the rest in int8). No calibration; OpenVINO's CPU plugin
  quantises activations at run time where it pays, so on openvino "dynamic" and "weights only" write
  the same IR. Unset `lm_head_precision` / `embedding_precision` leave NNCF's own rule (the first and
  last weighted layers, i.e. embedding and LM head, at int8 when the rest is int4); set, they are
  compressed apart at their own precision (a second NNCF call skips weights already compressed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hfexport.artifacts import OpenVINOModel
from hfexport.errors import ExportError, first_line

DEFAULT_INT4_GROUP_SIZE = 128
Precision = Literal["fp32", "int8", "int4"]


@dataclass(frozen=True)
class PostTrainingSettings:
    """nncf.quantize: int8 weights and activations, calibrated on text."""

    calibration_samples: int
    smooth_quant_alpha: float | None  # None: NNCF's default; 0: off
    symmetric_activations: bool = False
    exclude_nodes: tuple[str, ...] = ()
    inference_precision: str | None = None  # the bundle's compute precision (None: the target's)
    precision: Literal["int8"] = "int8"

    def describe(self) -> str:
        return "quantize(int8, static" + _computes(self.inference_precision) + ")"


@dataclass(frozen=True)
class WeightCompressionSettings:
    """nncf.compress_weights; `lm_head_precision` / `embedding_precision` None keep NNCF's own rule."""

    precision: Literal["int8", "int4"]
    group_size: int  # int4 only (int8 is per channel)
    ratio: float  # int4 only: share of layers in int4
    lm_head_precision: Precision | None = None
    embedding_precision: Precision | None = None
    exclude_nodes: tuple[str, ...] = ()
    weights_only: bool = True  # False: asked for as `mode: dynamic`, which on OpenVINO is the same
    # int4 LM head / embedding kept only if top-1 agreement with the float graph stays >= this (agreement.py)
    int4_top1_target: float | None = None
    inference_precision: str | None = None  # the bundle's compute precision (None: the target's)

    def describe(self) -> str:
        computes = _computes(self.inference_precision)
        if not self.weights_only:
            return f"quantize({self.precision}, dynamic{computes})"
        check = (f", int4 LM head while top-1 >= {self.int4_top1_target:g}"
                 if self.int4_top1_target is not None and self.lm_head_precision == "int4" else "")
        return f"quantize({self.precision}, weights only, group {self.group_size}{check}{computes})"


def _computes(precision: str | None) -> str:
    return f", computes {precision}" if precision else ""


def quantize_openvino(settings: PostTrainingSettings | WeightCompressionSettings, artifact: OpenVINOModel,
                      out_dir: Path, texts: list[str] = (), encode: Callable[[str], dict] | None = None,
                      windows: tuple[list[list[int]], int] | None = None) -> OpenVINOModel:
    """Quantise `artifact` into `out_dir`; post-training calibrates on `texts`, each turned into feeds by `encode`;
    `windows` (token windows, threads) are what `int4_top1_target` measures on."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(artifact.path))
    # NOTE: NNCF prints tables and progress bars through its own stdout handler at INFO, set when it is
    # imported; a quiet build (root logger at ERROR) silences it too.
    nncf_logger = logging.getLogger("nncf")
    saved_level = nncf_logger.level
    nncf_logger.setLevel(max(saved_level, logging.getLogger().level))
    try:
        if isinstance(settings, WeightCompressionSettings):
            result, stats = _compress_weights(nncf, model, settings, windows)
        else:
            result, stats = _post_training(nncf, model, settings, texts, encode)
    except (ExportError, KeyboardInterrupt):
        raise
    except Exception as exc:  # NNCF raises anything; the first line is what the user needs
        raise ExportError(f"NNCF {settings.precision} quantisation failed: {first_line(exc)}") from exc
    finally:
        nncf_logger.setLevel(saved_level)
    out = out_dir / "model.xml"
    ov.save_model(result, str(out), compress_to_fp16=False)
    if settings.inference_precision:  # the manifest's target.session.openvino takes it (build/manifest.py)
        stats["session_inference_precision"] = settings.inference_precision
    return OpenVINOModel(out, artifact.inputs, artifact.outputs,
                         stats={"nodes": len(result.get_ops()), "quantized_nodes": _quantized_nodes(result),
                                "precision": settings.precision, **stats})


def _compress_weights(nncf, model, config: WeightCompressionSettings, windows=None):
    group_size = config.group_size

    def compress(model, precision: str, ignored_names: list[str], **extra):
        scope = nncf.IgnoredScope(names=ignored_names) if ignored_names else None
        if precision == "int4":
            from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

            # ADJUST: a matrix whose input size the group does not divide takes the largest divisor >= 32, or
            # stays int8 when none exists (T5's 4-wide relative-position table), instead of failing the build.
            fallback = AdvancedCompressionParameters(group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST)
            return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=group_size,
                                         ratio=config.ratio, ignored_scope=scope, advanced_parameters=fallback,
                                         **extra)
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope)

    if config.precision == "int4":
        settings = {"algorithm": "nncf.compress_weights", "mode": "weights only", "weights": "int4_sym",
                    "group_size": group_size, "ratio": config.ratio}
    else:
        settings = {"algorithm": "nncf.compress_weights", "mode": "weights only",
                    "weights": "int8_asym per channel"}
    excluded = list(config.exclude_nodes)
    if config.lm_head_precision is None and config.embedding_precision is None:
        return compress(model, config.precision, excluded), settings

    lm_head, embeddings, tied = find_lm_head_and_embeddings(model)
    wanted = {name: config.embedding_precision or "int8" for name in embeddings}
    if lm_head:
        wanted[lm_head] = config.lm_head_precision or "int8"
        if tied:  # one shared table: the LM head's precision decides
            wanted.update({name: wanted[lm_head] for name in embeddings})
    main = config.precision

    def apply(model, wanted: dict[str, str]):
        keep_float = excluded + [name for name, p in wanted.items() if p == "fp32"]
        # all_layers: with the special layers named apart, NNCF must not pick its own first/last layers.
        extra = {"all_layers": True} if main == "int4" else {}
        model = compress(model, main, keep_float + [n for n, p in wanted.items() if p not in ("fp32", main)],
                         **extra)
        for precision in sorted({p for p in wanted.values() if p not in ("fp32", main)}):
            extra = {"all_layers": True} if precision == "int4" else {}
            model = compress(model, precision, keep_float + [n for n, p in wanted.items() if p != precision],
                             **extra)
        return model

    check = {}
    checked = config.int4_top1_target is not None and "int4" in wanted.values()
    if checked and not windows:  # nothing to measure on (an encoder-decoder's graphs): no unchecked int4 here
        wanted, checked = _int4_to_int8(wanted), False
    if checked:
        from hfexport.backends._openvino.agreement import agreement, next_tokens

        tokens, threads = windows
        float_model, reference = model.clone(), next_tokens(model, tokens, threads)
        compressed = apply(model, wanted)
        top1 = agreement(reference, compressed, tokens, threads)
        check = {"int4_top1_target": config.int4_top1_target, "int4_special_top1": round(top1, 4)}
        if top1 < config.int4_top1_target:  # the LM head / embedding back to int8, measured again
            wanted = _int4_to_int8(wanted)
            compressed = apply(float_model, wanted)
            check["int8_special_top1"] = round(agreement(reference, compressed, tokens, threads), 4)
    else:
        compressed = apply(model, wanted)
    applied = {("lm_head" if name == lm_head else "embedding"): p for name, p in wanted.items()}
    return compressed, {**settings, "lm_head": lm_head, "lm_head_precision": applied.get("lm_head"),
                        "embedding_precision": applied.get("embedding"), "tied_embeddings": tied, **check}


def _int4_to_int8(wanted: dict[str, str]) -> dict[str, str]:
    return {name: "int8" if p == "int4" else p for name, p in wanted.items()}


def find_lm_head_and_embeddings(model) -> tuple[str | None, list[str], bool]:
    """(the MatMul producing `logits`, the Gathers over a [vocab, hidden] table, whether they share it)."""
    logits = next((out for out in model.outputs if "logits" in out.get_names()), None)
    if logits is None:
        return None, [], False
    node, lm_head = logits.get_node(), None
    for _ in range(4):  # Result <- (Add | Convert | Multiply) <- MatMul
        node = node.input_value(0).get_node()
        if node.get_type_name() == "MatMul":
            lm_head = node
            break
    vocab = logits.get_partial_shape()[-1]
    vocab = vocab.get_length() if vocab.is_static else None
    head_table = _constant_source(lm_head.input_value(1)) if lm_head is not None else None
    head_name = head_table.get_friendly_name() if head_table is not None else None
    embeddings, tied = [], False
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        table = _constant_source(op.input_value(0))
        if table is None or len(table.get_output_partial_shape(0)) != 2:
            continue
        if table.get_output_partial_shape(0)[0].get_length() == vocab:
            embeddings.append(op.get_friendly_name())
            tied = tied or table.get_friendly_name() == head_name
    return (lm_head.get_friendly_name() if lm_head is not None else None), embeddings, tied


def _constant_source(value):
    """The Constant behind a weight input (through a Convert from a compressed type), or None."""
    node = value.get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def _float_grouped_1d_convolutions(model) -> list[str]:
    """1-D grouped convolutions (wav2vec2's and HuBERT's positional convolution): kept float.

    NOTE: OpenVINO 2026.4.1's int8 kernel for them is wrong on AMX CPUs. Measured on a tiny wav2vec2 (kernel 16,
    2 groups of 16 channels), CTC token agreement with PyTorch: 0.19 with AMX, 0.93 with the same bundle capped
    at AVX512-VNNI (ONEDNN_MAX_CPU_ISA) and 0.93 with this convolution float on AMX. One layer of the model; 2-D
    grouped (depthwise) convolutions in image models are unaffected and stay int8."""
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "GroupConvolution" and op.get_input_partial_shape(0).rank.get_length() == 3]


def _post_training(nncf, model, config: PostTrainingSettings, texts, encode):
    texts = list(texts)[: config.calibration_samples]
    kept_float = _float_grouped_1d_convolutions(model)
    names = [*config.exclude_nodes, *kept_float]
    ignored = nncf.IgnoredScope(names=names) if names else None
    # MIXED: symmetric weights, asymmetric activations (GELU outputs and attention inputs are one-sided).
    preset = nncf.QuantizationPreset.PERFORMANCE if config.symmetric_activations else nncf.QuantizationPreset.MIXED
    extra = {}
    if config.smooth_quant_alpha is not None:
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        # NNCF switches SmoothQuant off with a negative alpha.
        alpha = config.smooth_quant_alpha or -1
        extra["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha))
    # NOTE: NNCF's transformer scheme where the graph has attention or layer norms (SoftMax, MVN): on
    # batch-normed convolutional networks it cost top-1 agreement (tiny ResNet 0.84 vs 0.93 with NNCF's
    # default scheme, MobileNetV2 0.31 vs 0.66), while ConvNeXt, layer-normed, needs it (0.92 vs 0.87);
    # docs/decisions/0140-image-tasks.md. Every text encoder has both: no change there.
    transformer = any(op.get_type_name() in ("Softmax", "SoftMax", "MVN") for op in model.get_ops())
    if transformer:
        extra["model_type"] = nncf.ModelType.TRANSFORMER
    quantized = nncf.quantize(model, nncf.Dataset(texts, encode), preset=preset, subset_size=len(texts),
                              ignored_scope=ignored, **extra)
    return quantized, {"algorithm": "nncf.quantize", "mode": "static",
                       "model_type": "transformer" if transformer else "default",
                       "preset": preset.value, "smooth_quant_alpha": config.smooth_quant_alpha,
                       "calibration_samples": len(texts), **({"kept_float": kept_float} if kept_float else {})}


def _quantized_nodes(model) -> int:
    """FakeQuantize nodes (post-training) plus low-bit weight constants (weight compression)."""
    low_bit = {"i8", "u8", "i4", "u4"}
    count = 0
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize" or (kind == "Constant" and op.get_element_type().get_type_name() in low_bit):
            count += 1
    return count
