"""Whisper's export check: PyTorch `generate(input_features)` against the runtime's Whisper loop
(runtime/whisper.py: the prompt with the detected language, suppress_tokens and begin_suppress_tokens) over the
exported encoder and decoder graphs (backends/_seq2seq_graph.py lays them out; the encoder takes input_features)."""

from __future__ import annotations

import json
from pathlib import Path


def restore_generation_config(model, generation_file: Path) -> None:
    """Put back on `model.generation_config` the keys of the model's generation_config.json that transformers
    5.x's GenerationConfig drops on load (Whisper's lang_to_id, task_to_id, no_timestamps_token_id,
    forced_decoder_ids, is_multilingual): without them `generate` decodes from the start token alone, not with
    the checkpoint's language / task / no-timestamps prompt (docs/decisions/0163-whisper.md)."""
    path = Path(generation_file)
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for key, value in (saved if isinstance(saved, dict) else {}).items():
        if not hasattr(model.generation_config, key):
            setattr(model.generation_config, key, value)


def greedy_check(model, source_dir: Path, processor_dir: Path, graphs, tokens: int) -> tuple[list[int], list[int],
                                                                                                float]:
    """(PyTorch's new tokens, the runtime loop's, the worst teacher-forced logit gap over PyTorch's sequence) on a
    generated clip, both sides fed transformers' features of it (the runtime's own are checked at prepare time)."""
    import numpy as np
    import torch
    from transformers import AutoFeatureExtractor

    from hfexport._quiet import quiet_libraries
    from hfexport.data import synthetic_audio
    from hfexport.runtime.whisper import WhisperLoop, WhisperPrompt

    with quiet_libraries():
        extractor = AutoFeatureExtractor.from_pretrained(str(processor_dir))
    restore_generation_config(model, Path(source_dir) / "generation_config.json")
    clip = synthetic_audio(0, extractor.sampling_rate)
    features = extractor([clip], sampling_rate=extractor.sampling_rate, return_tensors="pt")["input_features"]
    prompt = WhisperPrompt(model.generation_config.to_dict(), model.config.to_dict())
    loop = WhisperLoop(graphs, prompt)
    cross = graphs.encode_features(features.numpy())
    prefix = loop.prefixes(1, cross)[0]
    budget = max(1, min(tokens, prompt.max_positions - len(prefix)))
    with torch.inference_mode(), quiet_libraries():
        # min_new_tokens masks the end token, so a short random model is checked over every step; the loop too.
        want = model.generate(features, max_new_tokens=budget, min_new_tokens=budget, do_sample=False,
                              num_beams=1)[0].tolist()
        want = [t for t in want if t not in prompt.eos]
        sequence = torch.tensor([prefix + want])
        reference = model(input_features=features, decoder_input_ids=sequence).logits.numpy()
    got = loop.greedy([prefix], cross, budget, min_new_tokens=budget)[0]
    logits, _ = graphs.step(sequence.numpy(), None, graphs.empty_past(1, cross), cross, all_logits=True)
    return want, got, float(np.abs(logits - reference).max())


def log_mel_check(processor_dir: Path) -> float:
    """Max |transformers' WhisperFeatureExtractor - the runtime's numpy log-mel| on the generated clips."""
    from transformers import AutoFeatureExtractor

    from hfexport._quiet import quiet_libraries
    from hfexport.build.audio_processor import log_mel_difference
    from hfexport.runtime.whisper import LogMelFeatures

    with quiet_libraries():
        extractor = AutoFeatureExtractor.from_pretrained(str(processor_dir))
    return log_mel_difference(extractor, LogMelFeatures(Path(processor_dir) / "preprocessor_config.json"))
