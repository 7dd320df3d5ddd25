"""Speech recognition with Whisper: clips -> log-mel features (numpy) -> the encoder-decoder greedy loop -> text
(runtime/whisper.py). `model_file` is the encoder, the other graph of `model_files` the decoder."""

from __future__ import annotations

from pathlib import Path

from hfexport.runtime.paths import second_graph


def open_predictor(manifest, bundle: Path, backend, decoder_path: Path | None = None):
    """The recognizer over the bundle (or, for validation, over a build stage whose decoder is `decoder_path`)."""
    from hfexport.runtime.whisper import LogMelFeatures, WhisperRecognizer

    decoder = backend.open_sibling(decoder_path or bundle / second_graph(manifest, "decoder graph", "encoder"))
    features = LogMelFeatures(bundle / manifest.processor.file)
    return WhisperRecognizer(manifest, bundle, backend, decoder, features, bundle / manifest.tokenizer.file)
