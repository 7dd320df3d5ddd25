"""The build side of a backend: how it exports, optimises and quantises, and what it refuses at plan time.

The passes `export`, `optimize` and `quantize` say *what* a recipe wants; the target profile's `backend`
picks one of these classes, which decides *how*. A backend module holds no heavy imports at module level:
planning a build loads it without onnxruntime, openvino or torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from hfexport.artifacts import Artifact, TorchModel
from hfexport.backends.options import OptimizeConfig, QuantizeConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import PassConfig


class Backend(ABC):
    name: ClassVar[str]  # the profile's `backend`
    title: ClassVar[str]  # for messages: "ONNX Runtime"
    quantizer: ClassVar[str]  # what quantises for it, for messages: "ONNX Runtime quantiser", "NNCF"
    artifact: ClassVar[type[Artifact]]  # what its export produces and its targets deploy
    # Quantiser options only this backend reads; another backend's planner refuses them, naming this one.
    quantize_options: ClassVar[frozenset[str]] = frozenset()
    # Why `optimize` has nothing to do on this backend (the plan leaves the step out), or None if it does.
    optimize_skipped: ClassVar[str | None] = None
    # The inputs its export takes (a task's `modality`); another is refused at plan time, in one line.
    modalities: ClassVar[frozenset[str]] = frozenset({"text", "image", "audio"})

    # -- export ------------------------------------------------------------------------------------

    @abstractmethod
    def export_config_class(self, generative: bool) -> type[PassConfig]:
        """The options of this backend's encoder (`generative` False) or KV-cache export."""

    @abstractmethod
    def export(self, config: PassConfig, generative: bool, artifact: TorchModel, ctx: BuildContext,
               out_dir: Path) -> Artifact:
        """Export to `out_dir`, checked against PyTorch; `config` is an `export_config_class` instance."""

    # -- optimize ----------------------------------------------------------------------------------

    def check_optimize(self, config: OptimizeConfig, plan: PlanContext) -> None:
        if self.optimize_skipped and config.model_fields_set:
            field = sorted(config.model_fields_set)[0]
            raise PlanError(f"{field}: an ONNX Runtime fusion option; {self.optimize_skipped} "
                            f"(remove {field})")

    def optimize(self, config: OptimizeConfig, artifact: Artifact, ctx: BuildContext, out_dir: Path) -> Artifact:
        raise NotImplementedError(f"{self.title} has no build-time optimisation")

    # -- quantize ----------------------------------------------------------------------------------

    @abstractmethod
    def check_quantize(self, config: QuantizeConfig, plan: PlanContext) -> None:
        """Refuse what this backend's quantisers cannot do with `config` (the target's defaults applied)."""

    @abstractmethod
    def quantize_settings(self, config: QuantizeConfig, plan: PlanContext | BuildContext) -> Any:
        """The scheme that runs `config` here, every value effective (a frozen dataclass with `describe()`)."""

    @abstractmethod
    def quantize(self, settings: Any, artifact: Artifact, ctx: BuildContext, out_dir: Path) -> Artifact:
        """Run the scheme `quantize_settings` chose."""

    def refuse_foreign_options(self, explicit: set[str], plan: PlanContext, others: list[Backend]) -> None:
        """A recipe option that another backend's quantiser reads and this one does not: PlanError naming both."""
        for other in others:
            foreign = sorted((explicit & other.quantize_options) - self.quantize_options)
            if foreign:
                raise PlanError(f"{foreign[0]}: an {other.quantizer} option; {self.quantizer} on target "
                                f"{plan.target.name!r} does not take it (remove {foreign[0]})")


# int4_top1_target (either backend): calibration windows of this many tokens (fewer if the context is shorter).
SEARCH_WINDOWS, SEARCH_TOKENS = 16, 64


def search_windows(ctx: BuildContext, target: float, what: str) -> tuple[list[list[int]], int]:
    """(calibration token windows, threads) for a top-1 agreement check; says on the progress line what runs."""
    from hfexport import host
    from hfexport.data import token_windows

    length = min(SEARCH_TOKENS, ctx.source.max_length)
    windows = token_windows(ctx.hf_tokenizer(), ctx.calibration_texts, SEARCH_WINDOWS, length)
    ctx.progress.info(f"{what} on {len(windows)} calibration windows of {length} tokens, target top-1 {target:g}")
    return windows, ctx.target.session.intra_op_threads or host.physical_cores()


def text_encoder(ctx: BuildContext, names: list[str] | tuple[str, ...]):
    """One calibration item -> one batch-of-1 feed dict, made the way the bundle's runtime will: a text
    tokenised, or (image tasks) an image reference (data.load_image) through the image processor."""
    if ctx.modality == "image":
        return image_encoder(ctx, names)
    if ctx.modality == "audio":
        return audio_encoder(ctx, names)
    encode_batch = texts_encoder(ctx, names)
    return lambda text: encode_batch([text])


def texts_encoder(ctx: BuildContext, names: list[str] | tuple[str, ...]):
    """Texts -> one feed dict, padded to the longest as the runtime pads a batch (a text's own length alone)."""
    max_length = ctx.source.max_length

    def encode(texts: list[str]) -> dict:  # the tokenizer loads at the first text: dynamic int8 calibrates on none
        encoded = ctx.hf_tokenizer()(texts, padding=True, truncation=True, max_length=max_length,
                                     return_tensors="np")
        return {n: encoded[n].astype("int64") for n in names}

    return encode


input_encoder = text_encoder  # the name for what it is now: any task's calibration feeds


def image_encoder(ctx: BuildContext, names: list[str] | tuple[str, ...]):
    from hfexport.data import load_image

    processor = ctx.hf_processor()

    def encode(reference) -> dict:
        pixels = processor(images=[load_image(reference)], return_tensors="np")["pixel_values"]
        return {n: pixels.astype("float32") for n in names}

    return encode


def audio_encoder(ctx: BuildContext, names: list[str] | tuple[str, ...]):
    """A calibration clip (float array, or a .wav path) -> the feature extractor's feeds, batch of one."""
    from hfexport.data import load_audio

    extractor = ctx.hf_processor()
    rate = extractor.sampling_rate

    def encode(clip) -> dict:
        samples = load_audio(clip, rate)
        feeds = extractor([samples], sampling_rate=rate, return_tensors="np")
        return {n: feeds[n].astype("int64" if n == "attention_mask" else "float32") for n in names}

    return encode
