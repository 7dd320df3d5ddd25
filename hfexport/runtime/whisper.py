"""Whisper in numpy: log-mel features as transformers' WhisperFeatureExtractor makes them, and the
encoder-decoder greedy loop with Whisper's prompt and logits masks, as `WhisperForConditionalGeneration.generate`
runs them for a clip of up to 30 s (no timestamps, no long-form chunking).

Features (the bundle's processor/preprocessor_config.json): each clip float32, (do_normalize) zero mean / unit
variance, padded with `padding_value` to `n_samples` (30 s); a centred STFT (reflect padding, periodic Hann window of
`n_fft`, hop `hop_length`), power spectrum, the slaney mel filter bank (computed here from sampling rate,
`feature_size` and `n_fft`, 0-8 kHz as transformers builds it), log10 clamped at 1e-10, the last frame dropped,
each clip floored at its maximum - 8, then (x + 4) / 4. The build checks this against transformers.

Decoding (generation_config.json): the prompt is decoder_start_token_id, then forced_decoder_ids' tokens (the
language, detected by one decoder step over `lang_to_id` when the config leaves it open, and the task), then
<|notimestamps|>; `suppress_tokens` are masked at every step and `begin_suppress_tokens` at the first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hfexport.runtime.audio import as_audio_list, read_wav
from hfexport.runtime.generation import read_json

FEATURES_FILE = "processor/preprocessor_config.json"


# -- log-mel features ------------------------------------------------------------------------------------


def _hertz_to_mel(freq):
    """Slaney's mel scale (librosa's default, transformers' mel_scale="slaney"): linear below 1 kHz, log above."""
    freq = np.asarray(freq, np.float64)
    mels = 3.0 * freq / 200.0
    logstep = 27.0 / np.log(6.4)
    return np.where(freq >= 1000.0, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * logstep, mels)


def _mel_to_hertz(mels):
    mels = np.asarray(mels, np.float64)
    freq = 200.0 * mels / 3.0
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), freq)


def mel_filter_bank(frequency_bins: int, mel_bins: int, sampling_rate: int, min_hz: float = 0.0,
                    max_hz: float = 8000.0) -> np.ndarray:
    """[frequency_bins, mel_bins] triangular filters on the slaney scale, slaney-normalised (equal area)."""
    mel_points = np.linspace(_hertz_to_mel(min_hz), _hertz_to_mel(max_hz), mel_bins + 2)
    filter_freqs = _mel_to_hertz(mel_points)
    fft_freqs = np.linspace(0, sampling_rate // 2, frequency_bins)
    widths = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    bank = np.maximum(0.0, np.minimum(down, up))
    return bank * (2.0 / (filter_freqs[2:mel_bins + 2] - filter_freqs[:mel_bins]))[None, :]


class LogMelFeatures:
    """Clips -> input_features [batch, mel bins, frames] float32. Thread-safe (no state changes after init)."""

    def __init__(self, config_file: Path):
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: not a JSON object")
        self.sampling_rate = int(config.get("sampling_rate", 16000))
        self.mel_bins = int(config.get("feature_size", 80))
        self.n_fft = int(config.get("n_fft", 400))
        self.hop_length = int(config.get("hop_length", 160))
        self.n_samples = int(config.get("n_samples") or int(config.get("chunk_length", 30)) * self.sampling_rate)
        self.padding_value = float(config.get("padding_value", 0.0))
        self.do_normalize = bool(config.get("do_normalize", False))
        if float(config.get("dither", 0.0) or 0.0) != 0.0:
            raise ValueError(f"{config_file}: dither {config['dither']} adds random noise to every clip; the "
                             "runtime computes deterministic features (dither 0.0, as Whisper's checkpoints ship)")
        self.filters = mel_filter_bank(1 + self.n_fft // 2, self.mel_bins, self.sampling_rate)
        n = np.arange(self.n_fft)
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * n / self.n_fft)  # periodic Hann, as torch.hann_window

    @property
    def frames(self) -> int:
        return self.n_samples // self.hop_length

    def encode(self, clips) -> np.ndarray:
        arrays = [self.to_array(item, index) for index, item in enumerate(as_audio_list(clips))]
        return np.stack([self.features(a) for a in arrays])

    def to_array(self, item, index: int = 0) -> np.ndarray:
        """One clip -> 1-D float32 at the sampling rate; ValueError naming the clip and the fix."""
        if isinstance(item, (str, Path)):
            array = read_wav(item, self.sampling_rate, index)
        else:
            array = np.asarray(item)
            if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"audio {index}: a numpy clip should be 1-D float (mono samples at "
                                 f"{self.sampling_rate} Hz), got {array.dtype} of shape {array.shape}")
        if len(array) > self.n_samples:
            raise ValueError(f"audio {index}: {len(array) / self.sampling_rate:.1f} s is longer than the "
                             f"{self.n_samples / self.sampling_rate:.0f} s Whisper reads at once; split the clip "
                             "(long-form transcription is not supported yet)")
        return array.astype(np.float32)

    def features(self, clip: np.ndarray) -> np.ndarray:
        """[mel bins, frames] of one clip (float32 in, float32 out; the STFT in float64)."""
        if self.do_normalize:
            clip = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)
        padded = np.full(self.n_samples, self.padding_value, np.float64)
        padded[:len(clip)] = clip
        half = self.n_fft // 2
        signal = np.pad(padded, half, mode="reflect")
        count = 1 + (len(signal) - self.n_fft) // self.hop_length
        frames = np.lib.stride_tricks.as_strided(signal, (count, self.n_fft),
                                                 (signal.strides[0] * self.hop_length, signal.strides[0]))
        power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2  # [frames, frequency bins]
        mel = (power @ self.filters).T[:, :-1]  # [mel bins, frames]: the last frame dropped
        log_spec = np.log10(np.maximum(mel, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)


# -- decoding --------------------------------------------------------------------------------------------


class WhisperPrompt:
    """The decoder prompt and logits masks of a Whisper generation config (see the module docstring)."""

    def __init__(self, generation: dict, model: dict):
        def get(name):
            value = generation.get(name)
            return model.get(name) if value is None else value

        self.start = int(get("decoder_start_token_id"))
        eos = get("eos_token_id")
        self.eos = [] if eos is None else [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]
        self.lang_to_id = {str(k): int(v) for k, v in (generation.get("lang_to_id") or {}).items()}
        self.task_to_id = {str(k): int(v) for k, v in (generation.get("task_to_id") or {}).items()}
        self.no_timestamps = generation.get("no_timestamps_token_id")
        self.suppress = [int(t) for t in (get("suppress_tokens") or [])]
        self.begin_suppress = [int(t) for t in (get("begin_suppress_tokens") or [])]
        self.language, self.task = generation.get("language"), generation.get("task")
        forced = get("forced_decoder_ids") or []
        self.forced: list[int | None] = []
        for position, token in forced:  # consecutive positions from 1, as transformers reads them
            if position != len(self.forced) + 1:
                break
            self.forced.append(None if token is None else int(token))
        self.max_length = int(generation.get("max_length") or 448)
        self.max_positions = int(model.get("max_target_positions") or 448)

    def language_id(self, language: str) -> int:
        for token in (language, f"<|{language}|>", f"<|{language.lower()}|>"):
            if token in self.lang_to_id:
                return self.lang_to_id[token]
        raise ValueError(f"language {language!r} is not one of this model's: "
                         f"{', '.join(sorted(self.lang_to_id)) or 'none (an English-only model)'}")

    def prefix(self, language: str | None, task: str | None) -> list[int | None]:
        """The prompt with the language left None where it is to be detected."""
        language, task = language or self.language, task or self.task
        tokens: list[int | None] = [self.start]
        if language is None and task is None:
            tokens += self.forced
        if language is not None:
            lang = self.language_id(language)
            tokens[1:2] = [lang]
        elif self.lang_to_id and (len(tokens) <= 1 or tokens[1] is None):
            tokens[1:2] = [None]  # detected per clip
        if task is not None:
            if task not in self.task_to_id:
                raise ValueError(f"task {task!r} is not one of this model's: {', '.join(sorted(self.task_to_id))}")
            tokens.append(self.task_to_id[task])
        elif language is not None and self.task_to_id and not any(t in tokens for t in self.task_to_id.values()):
            tokens.append(self.task_to_id["transcribe"])
        if self.no_timestamps is not None and tokens[-1] != int(self.no_timestamps):
            tokens.append(int(self.no_timestamps))
        return tokens

    def mask(self, logits: np.ndarray, step: int) -> np.ndarray:
        logits = np.array(logits, np.float32, copy=True)
        if self.suppress:
            logits[:, self.suppress] = -np.inf
        if step == 0 and self.begin_suppress:
            logits[:, self.begin_suppress] = -np.inf
        return logits


class WhisperLoop:
    """Greedy decoding over the two graphs (runtime.seq2seq.Seq2SeqGraphs) with a WhisperPrompt."""

    def __init__(self, graphs, prompt: WhisperPrompt):
        self.graphs, self.prompt = graphs, prompt

    def generate_ids(self, features: np.ndarray, *, max_new_tokens: int | None = None, min_new_tokens: int = 0,
                     language: str | None = None, task: str | None = None) -> list[list[int]]:
        cross = self.graphs.encode_features(np.asarray(features, np.float32))
        return self.greedy(self.prefixes(features.shape[0], cross, language, task), cross, max_new_tokens,
                           min_new_tokens)

    def prefixes(self, batch: int, cross: list[np.ndarray], language=None, task=None) -> list[list[int]]:
        """Each clip's prompt, its language detected by one decoder step where the config leaves it open."""
        prefix = self.prompt.prefix(language, task)
        rows = [list(prefix) for _ in range(batch)]
        if None in prefix:
            ids = sorted(self.prompt.lang_to_id.values())
            logits, _ = self.graphs.step(np.full((batch, 1), self.prompt.start, np.int64), None,
                                         self.graphs.empty_past(batch, cross), cross)
            detected = np.asarray(ids)[logits[:, ids].argmax(-1)]
            rows = [[int(detected[r]) if t is None else t for t in row] for r, row in enumerate(rows)]
        return rows

    def greedy(self, prefixes: list[list[int]], cross: list[np.ndarray], max_new_tokens: int | None,
               min_new_tokens: int = 0) -> list[list[int]]:
        """The new tokens of each row (end token dropped), `min_new_tokens` with the end tokens masked."""
        batch, length = len(prefixes), len(prefixes[0])
        room = self.prompt.max_positions - length
        budget = min(int(max_new_tokens), room) if max_new_tokens else min(self.prompt.max_length - length, room)
        logits, past = self.graphs.step(np.asarray(prefixes, np.int64), None, self.graphs.empty_past(batch, cross),
                                        cross)
        eos = np.asarray(self.prompt.eos, np.int64)
        done = np.zeros(batch, bool)
        out: list[list[int]] = [[] for _ in range(batch)]
        for step in range(max(budget, 0)):
            masked = self.prompt.mask(logits, step)
            if step < min_new_tokens and len(eos):
                masked[:, eos] = -np.inf
            tokens = masked.argmax(-1)
            for row in np.flatnonzero(~done):
                if tokens[row] not in eos:
                    out[row].append(int(tokens[row]))
            done |= np.isin(tokens, eos)
            if done.all() or step == budget - 1:
                break
            logits, past = self.graphs.step(tokens[:, None], None, past, cross)
        return out


class WhisperRecognizer:
    """`recognizer(clips)` -> [{"text": ...}] per clip; `generate_ids(clips)` -> the new token ids (end token
    dropped). A clip is a mono float array at the model's sampling rate or a 16-bit PCM .wav path, up to 30 s.
    Greedy decoding, as transformers' default for Whisper. Safe to call from several threads at once."""

    task = "automatic-speech-recognition-seq2seq"

    def __init__(self, manifest, bundle: Path, backend, decoder, features: LogMelFeatures, tokenizer_file: Path):
        from tokenizers import Tokenizer

        from hfexport.runtime.seq2seq import Seq2SeqGraphs

        self.manifest, self.bundle, self.backend = manifest, bundle, backend
        self.features = self.encoder = features  # `encoder`: the input side, as other predictors name it
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        prompt = WhisperPrompt(read_json(bundle / "generation_config.json"), read_json(bundle / "config.json"))
        self.loop = WhisperLoop(Seq2SeqGraphs(backend, decoder), prompt)

    def __repr__(self) -> str:
        return f"<WhisperRecognizer {self.manifest.model.id} backend={self.backend.backend}>"

    def __call__(self, clips, *, max_new_tokens: int | None = None, language: str | None = None,
                 task: str | None = None) -> list[dict]:
        ids = self.generate_ids(clips, max_new_tokens=max_new_tokens, language=language, task=task)
        return [{"text": self.decode(row)} for row in ids]

    transcribe = __call__

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def generate_ids(self, clips, *, max_new_tokens: int | None = None, min_new_tokens: int = 0,
                     language: str | None = None, task: str | None = None) -> list[list[int]]:
        return self.loop.generate_ids(self.features.encode(clips), max_new_tokens=max_new_tokens,
                                      min_new_tokens=min_new_tokens, language=language, task=task)
