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
    from transformers import AutoFeatureExtractor

    from hfexport._quiet import quiet_libraries
    from hfexport.data import synthetic_audio
    from hfexport.runtime.audio import AudioEncoder, CTCVocabulary

    local = Path(source.local_dir)
    if not (local / "vocab.json").is_file():
        raise ModelLoadError(f"{local}: no vocab.json; a CTC speech model needs its tokenizer's vocabulary "
                             "(save the Wav2Vec2Processor / Wav2Vec2CTCTokenizer into the folder)")
    try:
        with quiet_libraries():
            extractor = AutoFeatureExtractor.from_pretrained(str(local), trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the feature extractor of {source.model_id} ({first_line(exc)}); the "
                             "folder needs a preprocessor_config.json") from exc
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
