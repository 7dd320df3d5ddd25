"""Speech input in numpy, as transformers' Wav2Vec2FeatureExtractor makes it, and CTC greedy decoding.

The bundle keeps the feature extractor's `processor/preprocessor_config.json` and the CTC tokenizer's
`processor/vocab.json` (+ tokenizer_config.json). Steps, as transformers does them: each clip float32, the batch
padded to its longest clip with `padding_value`, then (do_normalize) zero mean / unit variance per clip: over
the clip's own samples when the extractor returns an attention mask, else over the padded row (transformers
normalises a padded batch that way for wav2vec2-base style models, which take no mask). The build checks this
module against transformers on generated clips before it ships a bundle.

Inputs: a mono float numpy array at the extractor's sampling rate, a .wav path (16-bit PCM mono, read with
the standard library), or a list of those.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROCESSOR_FILE = "processor/preprocessor_config.json"  # where a bundle keeps it
VOCAB_FILE = "processor/vocab.json"
_ACCEPTED = ("pass a mono float numpy array at {rate} Hz, a .wav file path (16-bit PCM mono, {rate} Hz), "
             "or a list of those")


@dataclass(frozen=True)
class AudioBatch:
    """Preprocessed clips: input_values [batch, samples] float32, attention_mask [batch, samples] int64, and
    each clip's length in samples."""

    input_values: np.ndarray
    attention_mask: np.ndarray
    lengths: tuple[int, ...]

    def feeds(self, names: list[str]) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in names}


class AudioEncoder:
    """Clips -> input_values (and attention_mask), as the bundle's feature extractor says. Thread-safe."""

    input_names = ("input_values", "attention_mask")

    def __init__(self, config_file: Path, vocabulary: CTCVocabulary | None = None):
        self.vocabulary = vocabulary  # what postprocessing decodes ids with
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: not a JSON object")
        if int(config.get("feature_size", 1)) != 1:
            raise ValueError(f"{config_file}: feature_size {config.get('feature_size')} is not supported "
                             "(raw waveform extractors only, feature_size 1)")
        self.sampling_rate = int(config.get("sampling_rate", 16000))
        self.padding_value = float(config.get("padding_value", 0.0))
        self.do_normalize = bool(config.get("do_normalize", True))
        self.return_attention_mask = bool(config.get("return_attention_mask", False))

    def encode(self, clips) -> AudioBatch:
        arrays = [self.to_array(item, index) for index, item in enumerate(as_audio_list(clips))]
        lengths = tuple(len(a) for a in arrays)
        longest = max(lengths)
        values = np.full((len(arrays), longest), self.padding_value, np.float32)
        mask = np.zeros((len(arrays), longest), np.int64)
        for row, array in enumerate(arrays):
            values[row, :len(array)] = array
            mask[row, :len(array)] = 1
        if self.do_normalize:
            values = np.stack([self._normalise(row, n) for row, n in zip(values, lengths)])
        return AudioBatch(values, mask, lengths)

    def _normalise(self, row: np.ndarray, length: int) -> np.ndarray:
        """transformers' zero_mean_unit_var_norm, in float32 as it computes it."""
        if not self.return_attention_mask:
            return (row - row.mean()) / np.sqrt(row.var() + 1e-7)
        normed = (row - row[:length].mean()) / np.sqrt(row[:length].var() + 1e-7)
        normed[length:] = self.padding_value
        return normed

    def to_array(self, item, index: int = 0) -> np.ndarray:
        """One clip -> 1-D float32 at the sampling rate; ValueError naming the clip and the fix."""
        if isinstance(item, (str, Path)):
            return read_wav(item, self.sampling_rate, index)
        array = np.asarray(item)
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"audio {index}: a numpy clip should be 1-D float (mono samples at "
                             f"{self.sampling_rate} Hz), got {array.dtype} of shape {array.shape}")
        return array.astype(np.float32)


def read_wav(path: str | Path, sampling_rate: int, index: int = 0) -> np.ndarray:
    """A 16-bit PCM mono .wav at `sampling_rate` -> float32 in [-1, 1]; ValueError naming the file otherwise."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"audio {index}: file not found: {path} ({_ACCEPTED.format(rate=sampling_rate)})")
    try:
        with wave.open(str(file), "rb") as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise ValueError(f"audio {index}: {file} is not a PCM .wav file ({exc})") from None
    if channels != 1:
        raise ValueError(f"audio {index}: {file} has {channels} channels; pass mono audio (mix it down first)")
    if width != 2:
        raise ValueError(f"audio {index}: {file} is {8 * width}-bit; the runtime reads 16-bit PCM .wav")
    if rate != sampling_rate:
        raise ValueError(f"audio {index}: {file} is at {rate} Hz; this model takes {sampling_rate} Hz "
                         "(resample it first)")
    samples = np.frombuffer(frames, "<i2")
    if samples.size == 0:
        raise ValueError(f"audio {index}: {file} holds no samples")
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sampling_rate: int) -> None:
    """float samples in [-1, 1] -> a 16-bit PCM mono .wav (tests and examples)."""
    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sampling_rate)
        writer.writeframes(pcm.tobytes())


def _is_clip(item) -> bool:
    return isinstance(item, (str, Path)) or (isinstance(item, np.ndarray) and item.ndim == 1)


def as_audio_list(clips) -> list:
    """One clip or a list of clips, as a list; ValueError otherwise."""
    if _is_clip(clips):
        return [clips]
    if isinstance(clips, (list, tuple)) and clips and all(_is_clip(item) for item in clips):
        return list(clips)
    got = getattr(clips, "shape", None)
    raise ValueError(f"{_ACCEPTED.format(rate='the model')} (got {type(clips).__name__}"
                     f"{f' of shape {got}' if got is not None else ''}"
                     f"{' (empty)' if isinstance(clips, (list, tuple)) and not clips else ''})")


# -- CTC ----------------------------------------------------------------------------------------------


class CTCVocabulary:
    """The CTC tokenizer's vocabulary: id -> token, the blank (pad) id, and the word delimiter."""

    def __init__(self, vocab_file: Path, blank_id: int, word_delimiter: str = "|"):
        vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"{vocab_file}: should map tokens to ids")
        self.tokens = {int(i): str(t) for t, i in vocab.items()}
        self.blank_id, self.word_delimiter = int(blank_id), word_delimiter

    def decode(self, ids) -> str:
        """Greedy CTC: collapse repeats, drop the blank, word delimiter -> space. As Wav2Vec2CTCTokenizer.decode
        with transformers' ASR pipeline's settings for CTC (special tokens such as <unk> kept: dropping them
        first would also drop the blank before repeats are collapsed)."""
        collapsed = [int(i) for k, i in enumerate(ids) if k == 0 or i != ids[k - 1]]
        tokens = [self.tokens.get(i, "") for i in collapsed if i != self.blank_id]
        return "".join(" " if t == self.word_delimiter else t for t in tokens).strip()


def frame_count(samples: int, kernels, strides) -> int:
    """Frames the convolutional feature encoder makes from `samples` (no padding, as wav2vec2's)."""
    for kernel, stride in zip(kernels, strides):
        samples = (samples - int(kernel)) // int(stride) + 1
    return max(int(samples), 0)


def ctc_greedy_ids(logits: np.ndarray, frames: int) -> list[int]:
    """Argmax per frame over one row's first `frames` frames (the rest is padding)."""
    return logits[:frames].argmax(-1).tolist()
