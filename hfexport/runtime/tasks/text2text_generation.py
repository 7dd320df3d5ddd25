"""Text-to-text generation (T5, BART, Marian): the encoder-decoder loop (runtime/seq2seq.py) over the bundle's
two graphs: `model_file` is the encoder, the other graph of `model_files` with the same suffix the decoder."""

from __future__ import annotations

from pathlib import Path

from hfexport.runtime.paths import second_graph


def decoder_file(manifest) -> str:
    """The decoder graph's file name in the bundle."""
    return second_graph(manifest, "decoder graph", "encoder")


def open_predictor(manifest, bundle: Path, backend, decoder_path: Path | None = None):
    """The generator over the bundle (or, for validation, over a build stage whose decoder is `decoder_path`)."""
    from hfexport.runtime.seq2seq import Seq2SeqGenerator

    decoder = backend.open_sibling(decoder_path or bundle / decoder_file(manifest))
    return Seq2SeqGenerator(manifest, bundle, backend, bundle / manifest.tokenizer.file, decoder)
