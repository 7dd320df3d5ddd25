"""Text-to-text generation (T5, BART, Marian): the encoder-decoder loop (runtime/seq2seq.py) over the bundle's
two graphs: `model_file` is the encoder, the other graph of `model_files` with the same suffix the decoder."""

from __future__ import annotations

from pathlib import Path

from hfexport.errors import BundleIntegrityError


def decoder_file(manifest) -> str:
    """The decoder graph's file name in the bundle."""
    suffix = Path(manifest.model_file).suffix
    others = [name for name in manifest.model_files if name != manifest.model_file and Path(name).suffix == suffix]
    if len(others) != 1:
        raise BundleIntegrityError(f"manifest model_files should name one decoder graph ({suffix}) beside the encoder "
                                   f"{manifest.model_file!r}, found {others or 'none'}: rebuild the bundle")
    return others[0]


def open_predictor(manifest, bundle: Path, backend, decoder_path: Path | None = None):
    """The generator over the bundle (or, for validation, over a build stage whose decoder is `decoder_path`)."""
    from hfexport.runtime.seq2seq import Seq2SeqGenerator

    decoder = backend.open_sibling(decoder_path or bundle / decoder_file(manifest))
    return Seq2SeqGenerator(manifest, bundle, backend, bundle / manifest.tokenizer.file, decoder)
