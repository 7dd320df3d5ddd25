"""The torch-free encoder-decoder (seq2seq) generation loop: T5, BART, Marian and their relatives.

Two graphs (their layout: hfexport/backends/_seq2seq_graph.py): the encoder runs once per call and returns every
decoder layer's cross-attention K/V; the decoder then runs one step per new token with its self-attention cache.
The user surface is TextGenerator's (`generate`/`__call__`, `stream`, `generate_ids`, greedy and sampling,
stop strings, batches): only the loop over the graphs differs. Sources of different lengths are right-padded
and masked (the encoder's mask is the decoder's cross-attention mask); every row's decoder starts from
`decoder_start_token_id`, so the decoder side needs no padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hfexport.runtime.generation import TextGenerator, read_json
from hfexport.runtime.sampling import choose


@dataclass(frozen=True)
class Constraints:
    """The logits rules of a generation config that `generate` applies in greedy and sampled decoding alike:
    the start token, forced first/last tokens, suppressed single-token `bad_words_ids`, end-of-sequence ids,
    `min_length` (of the decoder sequence, start token included) and `no_repeat_ngram_size`."""

    start: int
    eos: tuple[int, ...] = ()
    forced_bos: int | None = None
    forced_eos: int | None = None
    banned: tuple[int, ...] = ()
    min_length: int = 0
    no_repeat_ngram: int = 0

    @classmethod
    def from_config(cls, generation: dict, model: dict) -> Constraints:
        def get(name):
            value = generation.get(name)
            return model.get(name) if value is None else value

        start = get("decoder_start_token_id")
        if start is None:
            start = get("bos_token_id")
        if start is None:
            raise ValueError("the model's generation config names no decoder_start_token_id")
        eos = get("eos_token_id")
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        bad = get("bad_words_ids") or []
        return cls(int(start), tuple(sorted({int(e) for e in eos})), _int_or_none(get("forced_bos_token_id")),
                   _forced_eos(get("forced_eos_token_id")),
                   tuple(int(words[0]) for words in bad if isinstance(words, list) and len(words) == 1),
                   int(get("min_length") or 0), int(get("no_repeat_ngram_size") or 0))

    def apply(self, logits: np.ndarray, step: int, budget: int, min_new_tokens: int = 0,
              history: list[list[int]] | None = None) -> np.ndarray:
        """[batch, vocab] logits of new token `step` (0-based) of `budget` with these rules applied (a copy);
        `history`: each row's decoder ids so far, start token first (for `no_repeat_ngram_size`)."""
        logits = np.array(logits, np.float32, copy=True)
        if self.banned:
            logits[:, list(self.banned)] = -np.inf
        if (step < min_new_tokens or 1 + step < self.min_length) and self.eos:
            logits[:, list(self.eos)] = -np.inf  # transformers' MinNewTokensLength / MinLength processors
        if self.no_repeat_ngram and history is not None:
            for row, ids in enumerate(history):
                logits[row, _repeated_ngram_ends(ids, self.no_repeat_ngram)] = -np.inf
        forced = self.forced_bos if step == 0 else None
        if step == budget - 1 and self.forced_eos is not None:
            forced = self.forced_eos  # ForcedEOSTokenLogitsProcessor: the last token the length allows
        if forced is not None:
            logits[:] = -np.inf
            logits[:, forced] = 0.0
        return logits


def _repeated_ngram_ends(ids: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in `ids` (transformers' NoRepeatNGramLogitsProcessor)."""
    if len(ids) + 1 < n:
        return []
    prefix = tuple(ids[len(ids) - n + 1:])
    return [ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i:i + n - 1]) == prefix]


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def _forced_eos(value) -> int | None:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return _int_or_none(value)


class Seq2SeqGraphs:
    """The encoder and decoder sessions (any runtime backend with `run(feeds) -> {name: array}`)."""

    def __init__(self, encoder, decoder):
        self.encoder, self.decoder = encoder, decoder
        self.cross_names = [n for n in encoder.output_names if n.startswith("cross.")]
        self.past_names = [n for n in decoder.input_names if n.startswith("past_key_values.")]
        self.present_names = [n for n in decoder.output_names if n.startswith("present.")]
        self.source_mask = "encoder_attention_mask" in decoder.input_names  # a speech decoder (Whisper) has none
        if not self.cross_names or len(self.past_names) != len(self.present_names) or \
                len(self.cross_names) != len(self.past_names):
            from hfexport.errors import BundleIntegrityError

            raise BundleIntegrityError("the encoder and decoder graphs do not match (cross.*, past_key_values.* and "
                                       "present.* counts differ): rebuild the bundle")

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        out = self.encoder.run({"input_ids": np.ascontiguousarray(input_ids, np.int64),
                                "attention_mask": np.ascontiguousarray(attention_mask, np.int64)})
        return [out[name] for name in self.cross_names]

    def encode_features(self, input_features: np.ndarray) -> list[np.ndarray]:
        """A speech encoder (Whisper): log-mel features [batch, mel bins, frames] -> the cross-attention K/V."""
        out = self.encoder.run({"input_features": np.ascontiguousarray(input_features, np.float32)})
        return [out[name] for name in self.cross_names]

    @staticmethod
    def empty_past(batch: int, cross: list[np.ndarray]) -> list[np.ndarray]:
        """A length-0 self-attention cache (self- and cross-attention share heads and head size)."""
        _, heads, _, dim = cross[0].shape
        empty = np.zeros((batch, heads, 0, dim), cross[0].dtype)
        return [empty] * len(cross)

    def step(self, input_ids: np.ndarray, encoder_mask: np.ndarray, past: list[np.ndarray],
             cross: list[np.ndarray], all_logits: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"input_ids": np.ascontiguousarray(input_ids, np.int64)}
        if self.source_mask:
            feeds["encoder_attention_mask"] = np.ascontiguousarray(encoder_mask, np.int64)
        feeds.update(zip(self.past_names, past))
        feeds.update(zip(self.cross_names, cross))
        out = self.decoder.run(feeds)
        logits = out["logits"]
        return (logits if all_logits else logits[:, -1]), [out[name] for name in self.present_names]


class Seq2SeqGenerator(TextGenerator):
    """`generate(texts, ...)` -> generated texts; `stream(text, ...)` -> pieces: TextGenerator's surface over an
    encoder and a decoder graph. Safe to call from several threads at once (no state is kept between calls)."""

    task = "text2text-generation"

    def __init__(self, manifest, bundle: Path, backend, tokenizer_file: Path, decoder):
        self._decoder_session = decoder
        super().__init__(manifest, bundle, backend, tokenizer_file)
        self.tokenizer.enable_truncation(max_length=self.max_length)
        model_config = read_json(bundle / "config.json")
        self.constraints = Constraints.from_config(self.generation_config, model_config)
        # Learned decoder positions (BART, Marian) end at max_position_embeddings; T5's relative ones do not.
        positions = model_config.get("max_position_embeddings") if model_config.get("model_type") != "t5" else None
        self.max_target_length = int(positions) if positions else None

    def _open_decoder(self, backend):
        return Seq2SeqGraphs(backend, self._decoder_session)

    def __repr__(self) -> str:
        return f"<Seq2SeqGenerator {self.manifest.model.id} backend={self.backend.backend}>"

    def encode(self, prompt) -> list[int]:
        if not isinstance(prompt, str):
            raise ValueError("a text-to-text model takes text (a string or a list of strings), not a conversation")
        return self.tokenizer.encode(prompt).ids

    def teacher_forced_logits(self, source: list[int], target: list[int]) -> np.ndarray:
        """Decoder logits at every position of `target` (a decoder input starting with the start token)."""
        ids = np.asarray([source], np.int64)
        mask = np.ones_like(ids)
        cross = self.decoder.encode(ids, mask)
        logits, _ = self.decoder.step(np.asarray([target], np.int64), mask, self.decoder.empty_past(1, cross),
                                      cross, all_logits=True)
        return logits[0]

    def _steps(self, prompt_ids: list[list[int]], max_new_tokens: int | None, seed: int | None, sampling: dict,
               stopped: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every text needs at least one token")
        sampling = dict(sampling)
        min_new_tokens = int(sampling.pop("min_new_tokens", None) or 0)
        settings = self.settings(**sampling)
        wanted = max_new_tokens or self.generation_config.get("max_new_tokens") or 20
        budget = int(wanted) if self.max_target_length is None else min(int(wanted), self.max_target_length - 1)
        batch, longest = len(prompt_ids), max(len(p) for p in prompt_ids)
        input_ids = np.full((batch, longest), self.pad_token_id, np.int64)
        mask = np.zeros((batch, longest), np.int64)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        rules = self.constraints
        cross = self.decoder.encode(input_ids, mask)
        past = self.decoder.empty_past(batch, cross)
        tokens = np.full(batch, rules.start, np.int64)
        # transformers' repetition penalty reads the decoder's ids, start token included
        seen = [np.array([rules.start], np.int64) for _ in range(batch)]
        history = [[rules.start] for _ in range(batch)]
        rng = np.random.default_rng(seed)
        eos = np.asarray(rules.eos, np.int64)
        done = np.zeros(batch, bool)
        for step in range(budget):
            logits, past = self.decoder.step(tokens[:, None], mask, past, cross)
            tokens = choose(rules.apply(logits, step, budget, min_new_tokens, history), seen, settings, rng)
            tokens[done] = self.pad_token_id
            for row, token in enumerate(tokens):
                history[row].append(int(token))
            active = ~done
            done = done | np.isin(tokens, eos)
            yield tokens, active & ~np.isin(tokens, eos)
            done |= stopped
            if done.all():
                return
            if settings.repetition_penalty != 1.0:
                seen = [np.append(s, t) if a else s for s, t, a in zip(seen, tokens, active)]
