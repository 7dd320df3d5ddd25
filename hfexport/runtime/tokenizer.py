"""Tokenisation with the `tokenizers` library: padding to the longest text, truncation to the model's max."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Batch:
    """Encoded texts as int64 arrays, plus what post-processing needs (offsets, special-token masks)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray  # [batch, seq, 2] character spans; (0, 0) for special and padding tokens
    special_tokens_mask: np.ndarray
    sequence_ids: list[list[int | None]]  # which text of a pair each token came from

    def feeds(self, names: list[str]) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in names}


class TextEncoder:
    def __init__(self, tokenizer_file: Path, *, max_length: int, pad_id: int, pad_token: str,
                 pair_truncation: str = "only_second"):
        """`pair_truncation`: which text of a pair gives way past max_length (question answering: the context,
        "only_second"; zero-shot's (text, hypothesis): the longer, "longest_first")."""
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.max_length = max_length
        # NOTE: configured once here and never changed, so encode() is safe to call from many threads.
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self.tokenizer.enable_truncation(max_length=max_length, strategy=pair_truncation)
        self._single = Tokenizer.from_file(str(tokenizer_file))
        self._single.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self._single.enable_truncation(max_length=max_length)

    def encode(self, texts: list[str] | list[tuple[str, str]]) -> Batch:
        if not texts:
            raise ValueError("no texts to encode")
        is_pair = isinstance(texts[0], (tuple, list))
        encoder = self.tokenizer if is_pair else self._single
        try:
            encodings = encoder.encode_batch([tuple(t) if is_pair else t for t in texts])
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as exc:  # noqa: BLE001 - a Rust panic in tokenizers is pyo3's PanicException
            if isinstance(exc, Exception) and not type(exc).__module__.startswith("pyo3"):
                # the tokenizers library raises plain Exception for what it refuses (a broken vocabulary, ...)
                from hfexport.errors import first_line

                first = first_line(exc)
                raise ValueError(f"the tokenizer refused the input: {first}") from exc
            raise ValueError(f"the bundle's tokenizer failed on this input ({exc}); its tokenizer.json is "
                             "damaged: rebuild the bundle") from None
        return Batch(
            input_ids=np.array([e.ids for e in encodings], dtype=np.int64),
            attention_mask=np.array([e.attention_mask for e in encodings], dtype=np.int64),
            token_type_ids=np.array([e.type_ids for e in encodings], dtype=np.int64),
            offsets=np.array([e.offsets for e in encodings], dtype=np.int64).reshape(len(encodings), -1, 2),
            special_tokens_mask=np.array([e.special_tokens_mask for e in encodings], dtype=np.int64),
            sequence_ids=[e.sequence_ids for e in encodings],
        )

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokenizer.id_to_token(token_id)
