"""The bundle's speech preprocessing: the feature extractor's settings and the CTC tokenizer's vocabulary,
checked against transformers before a bundle ships (runtime/audio.py must make the same input_values)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from hfexport.errors import ModelLoadError, first_line

TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json")


def prepare_audio_processor(source, folder: Path) -> Path:

    from hfexport.data import synthetic_audio
    from hfexport.runtime.audio import AudioEncoder, CTCVocabulary

    local = Path(source.local_dir)
    if not (local / "vocab.json").is_file():
        raise ModelLoadError(f"{local}: no vocab.json; a CTC speech model needs its tokenizer's vocabulary "
                             "(save the Wav2Vec2Processor / Wav2Vec2CTCTokenizer into the folder)")
    extractor = _feature_extractor(source, "a preprocessor_config.json")
    folder.mkdir(parents=True)
    config = extractor.to_dict()
    for name in ("sampling_rate", "padding_value", "do_normalize", "return_attention_mask", "feature_size"):
        config[name] = getattr(extractor, name)  # every setting the runtime reads, written out
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (local / name).is_file():
            shutil.copyfile(local / name, folder / name)
    try:
        encoder = AudioEncoder(folder / "preprocessor_config.json")
        CTCVocabulary(folder / "vocab.json", blank_id=int(source.config.get("pad_token_id") or 0))
    except ValueError as exc:
        raise ModelLoadError(f"{source.model_id}: {exc}") from None
    clips = [synthetic_audio(index, encoder.sampling_rate) for index in range(4)]
    want = extractor(clips, sampling_rate=encoder.sampling_rate, padding=True, return_tensors="np")
    got = encoder.encode(clips)
    worst = (float(np.abs(want["input_values"] - got.input_values).max())
             if want["input_values"].shape == got.input_values.shape else float("inf"))
    if worst > 1e-5:
        raise ModelLoadError(f"{source.model_id}: the runtime's audio preprocessing differs from "
                             f"{type(extractor).__name__} by {worst:.2e}; this feature extractor is not supported yet")
    return folder


# Whisper's log-mel features: the runtime's (numpy, float64 STFT) against transformers' (its torch path, float32,
# when torch is installed) differ by ~6e-5 on the generated clips (docs/decisions/0163-whisper.md).
LOG_MEL_TOLERANCE = 1e-3


def prepare_whisper_processor(source, folder: Path) -> Path:
    """The Whisper feature extractor's settings (processor/preprocessor_config.json), checked against
    transformers on generated clips, and the fast tokenizer (processor/tokenizer: the bundle's tokenizer/)."""

    from hfexport.build.engine import _prepare_tokenizer
    from hfexport.runtime.whisper import LogMelFeatures

    local = Path(source.local_dir)
    extractor = _feature_extractor(source, "the WhisperFeatureExtractor's preprocessor_config.json")
    missing = [name for name in ("n_fft", "hop_length", "n_samples", "feature_size") if not hasattr(extractor, name)]
    if missing:
        raise ModelLoadError(f"{local / 'preprocessor_config.json'}: {type(extractor).__name__} has no {missing[0]}; "
                             "a Whisper model needs a WhisperFeatureExtractor")
    folder.mkdir(parents=True)
    config = {k: v for k, v in extractor.to_dict().items() if k != "mel_filters"}  # the runtime computes them
    for name in ("sampling_rate", "padding_value", "feature_size", "n_fft", "hop_length", "n_samples",
                 "chunk_length", "dither"):
        config[name] = getattr(extractor, name, config.get(name))
    config["do_normalize"] = bool(getattr(extractor, "do_normalize", False))
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")
    _prepare_tokenizer(source, folder / "tokenizer")
    try:
        features = LogMelFeatures(folder / "preprocessor_config.json")
    except ValueError as exc:
        raise ModelLoadError(f"{source.model_id}: {exc}") from None
    worst = log_mel_difference(extractor, features)
    if worst > LOG_MEL_TOLERANCE:
        raise ModelLoadError(f"{source.model_id}: the runtime's log-mel features differ from "
                             f"{type(extractor).__name__} by {worst:.2e}; this feature extractor is not supported yet")
    return folder


def log_mel_difference(extractor, features) -> float:
    """Max |transformers - runtime| of the log-mel features of the generated clips (the export records it)."""
    from hfexport.data import synthetic_audio

    clips = [synthetic_audio(index, features.sampling_rate) for index in range(4)]
    want = extractor(clips, sampling_rate=features.sampling_rate, return_tensors="np")["input_features"]
    got = features.encode(clips)
    return float(np.abs(want - got).max()) if want.shape == got.shape else float("inf")


def _feature_extractor(source, needs: str):
    """The folder's feature extractor through transformers, or one ModelLoadError line saying what it `needs`."""
    from transformers import AutoFeatureExtractor

    from hfexport._quiet import quiet_libraries

    try:
        with quiet_libraries():
            return AutoFeatureExtractor.from_pretrained(str(source.local_dir),
                                                        trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the feature extractor of {source.model_id} ({first_line(exc)}); the "
                             f"folder needs {needs}") from exc
