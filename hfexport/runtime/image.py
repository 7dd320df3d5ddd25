"""Image preprocessing in numpy + Pillow, as the model's transformers image processor does it (PIL backend).

The bundle keeps the processor's settings in `processor/preprocessor_config.json` (transformers' own file,
every setting written out by the build): resize (to height x width, or the shortest edge, with ConvNeXt's
crop_pct), center crop, rescale (EfficientNet's offset), normalize (EfficientNet's include_top), channels
first, float32. The build checks this module against transformers on sample images before it ships a bundle.

Inputs: a file path (str or Path), a PIL.Image, an HxWx3 uint8 numpy array, or a list of those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# PIL's resampling filters by the integer transformers saves (PILImageResampling).
_RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
PROCESSOR_FILE = "processor/preprocessor_config.json"  # where a bundle keeps it
# The processor attributes this module reads; the build writes each of them out (transformers omits defaults).
SETTINGS = ("do_resize", "size", "resample", "crop_pct", "do_center_crop", "crop_size", "do_rescale",
            "rescale_factor", "rescale_offset", "do_normalize", "image_mean", "image_std", "include_top",
            "do_pad", "do_reduce_labels", "do_flip_channel_order", "do_color_quantize")
# Settings this module reproduces; a processor that turns on anything else is refused at build time.
_UNSUPPORTED = ("do_pad", "do_reduce_labels", "do_flip_channel_order", "do_color_quantize")


@dataclass(frozen=True)
class ImageBatch:
    """Preprocessed images, [batch, 3, height, width] float32, and how many images it holds."""

    pixel_values: np.ndarray

    def feeds(self, names: list[str]) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class ImageSettings:
    """The steps of one image processor, every value explicit."""

    resize: tuple[str, int, int] | None  # ("size", height, width) or ("shortest_edge", edge, 0)
    resample: int
    crop_pct: float | None  # ConvNeXt: resize the shortest edge to edge / crop_pct, then crop to edge
    crop: tuple[int, int] | None
    rescale: float | None
    rescale_offset: bool
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    include_top: bool  # EfficientNet: divide by std a second time

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image, when the steps fix it (they do for every model here)."""
        if self.crop:
            return self.crop
        if self.resize and self.resize[0] == "size":
            return self.resize[1], self.resize[2]
        if self.resize and self.crop_pct is not None:
            return self.resize[1], self.resize[1]
        return None


def settings_from_config(config: dict) -> ImageSettings:
    """A preprocessor_config.json's content -> ImageSettings; ValueError naming a setting this runtime lacks."""
    for name in _UNSUPPORTED:
        if config.get(name):
            raise ValueError(f"image processor setting {name}=true is not supported by the hfexport runtime")
    kind = str(config.get("image_processor_type") or "")
    resize = None
    if config.get("do_resize"):
        size = config.get("size") or {}
        if size.get("height") and size.get("width") and not size.get("shortest_edge"):
            resize = ("size", int(size["height"]), int(size["width"]))
        elif size.get("shortest_edge") and not size.get("longest_edge"):
            resize = ("shortest_edge", int(size["shortest_edge"]), 0)
        else:
            raise ValueError(f"image processor size {size} is not supported (height/width or shortest_edge)")
    crop = None
    if config.get("do_center_crop"):
        crop_size = config.get("crop_size") or {}
        if not (crop_size.get("height") and crop_size.get("width")):
            raise ValueError(f"image processor crop_size {crop_size} should give height and width")
        crop = (int(crop_size["height"]), int(crop_size["width"]))
    resample = int(config.get("resample", 2) if config.get("resample") is not None else 2)
    if resample not in _RESAMPLE_NAMES:
        raise ValueError(f"image processor resample {resample} is not a PIL filter (0-5)")
    convnext = kind.startswith("ConvNext") and resize is not None and resize[0] == "shortest_edge"
    crop_pct = float(config.get("crop_pct") or 224 / 256) if convnext and resize[1] < 384 else None
    if convnext and crop_pct is None:
        resize = ("size", resize[1], resize[1])  # ConvNeXt at 384 or more warps to a square
    normalize = bool(config.get("do_normalize"))
    return ImageSettings(
        resize=resize, resample=resample, crop_pct=crop_pct, crop=crop,
        rescale=float(config["rescale_factor"]) if config.get("do_rescale") else None,
        rescale_offset=bool(config.get("rescale_offset")) and kind.startswith("EfficientNet"),
        mean=_channels(config.get("image_mean"), "image_mean") if normalize else None,
        std=_channels(config.get("image_std"), "image_std") if normalize else None,
        include_top=bool(config.get("include_top")) and kind.startswith("EfficientNet") and normalize)


def explicit_config(processor) -> dict:
    """A transformers image processor's preprocessor_config.json with every setting above written out
    (read by attribute, so this module still imports no transformers)."""
    import dataclasses

    config = dict(processor.to_dict())
    for name in SETTINGS:
        value = getattr(processor, name, None)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):  # transformers' SizeDict
            value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
        elif hasattr(value, "value"):  # PILImageResampling
            value = int(value.value)
        elif isinstance(value, tuple):
            value = list(value)
        config[name] = value
    return config


def _channels(value, name: str) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value] * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"image processor {name} should be 3 numbers, got {value!r}")
    return tuple(float(v) for v in values)


class ImageEncoder:
    """Images -> pixel_values, as the bundle's image processor says. Safe to call from many threads."""

    input_names = ("pixel_values",)

    def __init__(self, config_file: Path):
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: not a JSON object")
        self.settings = settings_from_config(config)

    def encode(self, images) -> ImageBatch:
        items = as_image_list(images)
        return ImageBatch(np.stack([self.preprocess(to_rgb_array(item, index)) for index, item in enumerate(items)]))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One HxWx3 uint8 image -> 3xhxw float32, step by step as transformers' PIL backend does it."""
        s = self.settings
        if s.resize is not None:
            height, width = image.shape[:2]
            if s.resize[0] == "size":
                image = _resize(image, s.resize[1], s.resize[2], s.resample)
            elif s.crop_pct is not None:
                edge = s.resize[1]
                new_h, new_w = _shortest_edge(height, width, int(edge / s.crop_pct))
                image = _center_crop(_resize(image, new_h, new_w, s.resample), edge, edge)
            else:
                image = _resize(image, *_shortest_edge(height, width, s.resize[1]), s.resample)
        if s.crop is not None:
            image = _center_crop(image, *s.crop)
        values = image
        if s.rescale is not None:
            values = (values.astype(np.float64) * s.rescale).astype(np.float32)
            if s.rescale_offset:
                values -= 1
        if s.mean is not None:
            values = values.astype(np.float32, copy=False)
            values = (values - np.array(s.mean, np.float32)) / np.array(s.std, np.float32)
            if s.include_top:
                values = values / np.array(s.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(values, -1, 0), dtype=np.float32)


def _shortest_edge(height: int, width: int, edge: int) -> tuple[int, int]:
    """(height, width) with the shorter side `edge` and the ratio kept (torchvision's rule, truncated)."""
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


def _resize(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    from PIL import Image

    resized = Image.fromarray(image).resize((width, height), resample=Image.Resampling(resample))
    return np.asarray(resized)


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop on HxWxC: the middle, zero-padded first where the image is smaller."""
    orig_h, orig_w = image.shape[:2]
    top, left = (orig_h - height) // 2, (orig_w - width) // 2
    if top >= 0 and left >= 0:
        return image[top:top + height, left:left + width]
    new_h, new_w = max(height, orig_h), max(width, orig_w)
    padded = np.zeros((new_h, new_w, image.shape[2]), image.dtype)
    pad_top, pad_left = -(-(new_h - orig_h) // 2), -(-(new_w - orig_w) // 2)
    padded[pad_top:pad_top + orig_h, pad_left:pad_left + orig_w] = image
    top, left = top + pad_top, left + pad_left
    return padded[max(top, 0):max(top, 0) + height, max(left, 0):max(left, 0) + width]


# -- inputs -------------------------------------------------------------------------------------------

_ACCEPTED = "pass an image file path, a PIL.Image, an HxWx3 uint8 numpy array, or a list of those"


def _is_image(item) -> bool:
    if isinstance(item, (str, Path, np.ndarray)):
        return True
    return type(item).__module__.startswith("PIL.")


def as_image_list(images) -> list:
    """One image or a list of images, as a list (each still a path, PIL image or array); ValueError otherwise."""
    if _is_image(images):
        return [images]
    if isinstance(images, (list, tuple)) and images and all(_is_image(item) for item in images):
        return list(images)
    raise ValueError(f"{_ACCEPTED} (got {type(images).__name__}{' (empty)' if images == [] else ''})")


def to_rgb_array(item, index: int = 0) -> np.ndarray:
    """One image -> HxWx3 uint8; ValueError naming the image and the fix."""
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3 or 0 in item.shape:
            raise ValueError(f"image {index}: a numpy image should be HxWx3 uint8, got {item.dtype} of shape "
                             f"{item.shape}")
        return item
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, (str, Path)):
        try:
            with Image.open(Path(item).expanduser()) as opened:
                return np.asarray(opened.convert("RGB"))
        except FileNotFoundError:
            raise ValueError(f"image {index}: file not found: {item}") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"image {index}: {item} is not an image Pillow can read ({first})") from None
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    raise ValueError(f"image {index}: {_ACCEPTED}")
