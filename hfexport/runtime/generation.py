"""The torch-free generation loop: prompts in, generated text out (or streamed), over a KV-cache graph.

Prompts of different lengths run as one batch, left-padded: the attention mask hides the padding and
position ids count real tokens only (as transformers' `generate` does), so a batched prompt gives the
same tokens as the prompt alone. Defaults (EOS ids, sampling settings) come from the bundle's
`generation_config.json`, the model's own generation config saved at build time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hfexport.runtime.chat import read_chat_template, render_chat
from hfexport.runtime.manifest import Manifest
from hfexport.runtime.sampling import SamplingSettings, choose, sample_token

Prompt = str | list[dict]  # a text, or a conversation rendered with the chat template


class TextGenerator:
    """`generate(prompts, ...)` -> generated texts; `stream(prompt, ...)` -> text pieces as they come.

    Safe to call from several threads at once: every call has its own cache, binding and random state.
    """

    task = "text-generation"

    def __init__(self, manifest: Manifest, bundle: Path, backend, tokenizer_file: Path):
        from tokenizers import Tokenizer

        self.manifest, self.path, self.backend = manifest, bundle, backend
        self.decoder = self._open_decoder(backend)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.generation_config = read_json(bundle / "generation_config.json")
        model_config = read_json(bundle / "config.json")
        eos = self.generation_config.get("eos_token_id", model_config.get("eos_token_id"))
        self.eos_token_ids: list[int] = sorted({int(e) for e in ([eos] if isinstance(eos, int) else eos or [])})
        pad = self.generation_config.get("pad_token_id")
        self.pad_token_id = int(pad if pad is not None else (self.eos_token_ids or [0])[0])
        self.max_length = manifest.model.max_length
        tok_dir = tokenizer_file.parent
        self.chat_template = read_chat_template(tok_dir)
        tok_config = read_json(tok_dir / "tokenizer_config.json")
        self._special_tokens = {k: _token_text(tok_config.get(k)) for k in ("bos_token", "eos_token", "pad_token",
                                                                             "unk_token")}

    def _open_decoder(self, backend):
        """The step runner over the bundle's graph (a subclass with another loop opens its own)."""
        return backend.decoder()

    def __repr__(self) -> str:
        return f"<TextGenerator {self.manifest.model.id} backend={self.backend.backend}>"

    # -- text <-> tokens ---------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True, **variables) -> str:
        if not self.chat_template:
            raise ValueError("this model's tokenizer has no chat template")
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           special_tokens=self._special_tokens, **variables)

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, list):  # the rendered template carries its own special tokens
            return self.tokenizer.encode(self.apply_chat_template(prompt), add_special_tokens=False).ids
        return self.tokenizer.encode(prompt).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- the calls users make ----------------------------------------------------------------------------

    def generate(self, prompts: Prompt | list[Prompt], *, max_new_tokens: int | None = None, stop=None,
                 seed: int | None = None, **sampling) -> str | list[str]:
        """Generated text (without the prompt) for one prompt, or a list for a list of prompts.

        Options: max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
        repetition_penalty (unset ones come from the model's generation config), stop (a string or a
        list: generation ends at the first and the text is cut before it), seed (sampling repeats).
        """
        batch, single = _as_batch(prompts)
        ids = self.generate_ids([self.encode(p) for p in batch], max_new_tokens=max_new_tokens, stop=stop,
                                seed=seed, **sampling)
        texts = [_cut_at_stop(self.decode(row), _stops(stop))[0] for row in ids]
        return texts[0] if single else texts

    __call__ = generate

    def generate_ids(self, prompt_ids: list[list[int]], *, max_new_tokens: int | None = None, stop=None,
                     seed: int | None = None, **sampling) -> list[list[int]]:
        """Token ids in, generated token ids out (EOS excluded); what validation compares with PyTorch."""
        stops = _stops(stop)
        rows: list[list[int]] = [[] for _ in prompt_ids]
        detokenizers = [_Detokenizer(self.decode) for _ in prompt_ids] if stops else []
        written = [""] * len(prompt_ids)  # each row's text so far, where stop strings are looked for
        stopped = np.zeros(len(prompt_ids), bool)
        for tokens, active in self._steps(prompt_ids, max_new_tokens, seed, sampling, stopped):
            for row, (token, on) in enumerate(zip(tokens, active)):
                if on:
                    rows[row].append(token)
                    if stops:
                        written[row] += detokenizers[row].add(token)
                        if _cut_at_stop(written[row], stops)[1]:
                            stopped[row] = True
        return rows

    def stream(self, prompt: Prompt, *, max_new_tokens: int | None = None, stop=None, seed: int | None = None,
               tokens: list[int] | None = None, **sampling) -> Iterator[str]:
        """Text pieces in order; joined, they equal `generate(prompt, ...)` with the same arguments. `tokens`: a
        list the generated token ids are appended to as they come (a server counts usage with it)."""
        stops = _stops(stop)
        # Text that could still become the start of a stop string is held back until it cannot.
        hold = max((len(s) for s in stops), default=1) - 1
        detokenizer = _Detokenizer(self.decode, tokens if tokens is not None else [])
        emitted = 0
        stopped = np.zeros(1, bool)
        text = ""
        for step, active in self._steps([self.encode(prompt)], max_new_tokens, seed, sampling, stopped):
            if not active[0]:
                break
            piece = detokenizer.add(step[0])
            if not piece:  # nothing new yet (a multi-byte character split across tokens: wait for the rest)
                continue
            text, hit = _cut_at_stop(text + piece, stops)
            if hit:
                stopped[0] = True
                break
            safe = len(text) - hold
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        if not stopped[0]:  # what a split character left pending, as decoding every token at once gives it
            text = _cut_at_stop(text + detokenizer.rest(), stops)[0]
        if len(text) > emitted:
            yield text[emitted:]

    # -- the loop ------------------------------------------------------------------------------------------

    def settings(self, **overrides) -> SamplingSettings:
        """Sampling settings: the call's, else the model's generation config, else transformers' defaults."""
        unknown = set(overrides) - set(SamplingSettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        values = {}
        for name, default in SamplingSettings.__dataclass_fields__.items():
            value = overrides.get(name)
            if value is None:
                value = self.generation_config.get(name)
            values[name] = default.default if value is None else value
        values["top_k"] = int(values["top_k"])
        return SamplingSettings(**values)

    def _steps(self, prompt_ids: list[list[int]], max_new_tokens: int | None, seed: int | None, sampling: dict,
               stopped: np.ndarray) -> Iterator[tuple[list[int], list[bool]]]:
        """Yield (next token of each row, whether each row is still active) per step; callers may set
        `stopped[row]`."""
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        sampling = dict(sampling)
        min_new_tokens = int(sampling.pop("min_new_tokens", None) or 0)
        settings = self.settings(**sampling)
        longest = max(len(p) for p in prompt_ids)
        if longest >= self.max_length:
            raise ValueError(f"prompt of {longest} tokens leaves no room (model max length {self.max_length})")
        wanted = max_new_tokens or self.generation_config.get("max_new_tokens") or 20
        budget = min(int(wanted), self.max_length - longest)
        batch = len(prompt_ids)
        input_ids = np.full((batch, longest), self.pad_token_id, np.int64)
        # One mask buffer for the whole run: each step passes a longer view of it, nothing is reallocated.
        mask = np.zeros((batch, longest + budget), np.int64)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, longest - len(ids):] = ids
            mask[row, longest - len(ids):] = 1
        positions = np.where(mask[:, :longest] == 1, np.cumsum(mask[:, :longest], 1) - 1, 1)
        next_position = positions[:, -1:] + 1
        seen = [np.asarray(ids, np.int64) for ids in prompt_ids]
        rng = np.random.default_rng(seed)
        eos = np.asarray(self.eos_token_ids, np.int64)
        done = np.zeros(batch, bool)
        finished = False  # any row done
        # capacity: a decoder that can preallocate the cache (a fused ONNX graph) never grows it
        cache = self.decoder.empty_cache(batch, capacity=longest + budget)
        logits, cache = self.decoder.step(input_ids, mask[:, :longest], positions, cache)
        # NOTE: the loop's own work runs right after ONNX Runtime or OpenVINO has streamed the weights through
        # the caches, so each Python and numpy call costs several times its warm price: ~100 us a token on the
        # fp32 bench Llama (3% of its step) against ~14 us for a bare loop. One row decoded greedily, the common
        # case, keeps its bookkeeping in Python ints (_one_row); plain greedy takes the argmax before any EOS
        # suppression (docs/decisions/0198-lean-decode-loop.md).
        greedy = not settings.do_sample and settings.repetition_penalty == 1.0
        if batch == 1 and settings.repetition_penalty == 1.0:
            yield from self._one_row(logits, cache, mask, next_position, longest, budget, min_new_tokens, stopped,
                                     None if greedy else (settings, rng))
            return
        for step in range(budget):
            suppress = step < min_new_tokens and eos.size
            if suppress and not greedy:
                logits = _without(logits, eos)  # as transformers' MinNewTokensLengthLogitsProcessor
            tokens = choose(logits, seen, settings, rng)
            if suppress and greedy and (tokens[:, None] == eos).any():  # the same tokens as suppressing first
                tokens = choose(_without(logits, eos), seen, settings, rng)
            if finished:
                tokens[done] = self.pad_token_id
            done |= (tokens == eos[0]) if eos.size == 1 else (tokens[:, None] == eos).any(1)
            yield tokens.tolist(), (~done).tolist()  # rows that were active and did not just end
            done |= stopped
            finished = bool(done.any())
            if (finished and done.all()) or step == budget - 1:
                return
            if settings.repetition_penalty != 1.0:
                seen = [np.append(s, t) if not d else s for s, t, d in zip(seen, tokens, done)]
            total = longest + step + 1
            logits, cache = self.decoder.step(tokens[:, None], mask[:, :total], next_position, cache)
            next_position = next_position + 1

    def _one_row(self, logits, cache, mask: np.ndarray, position: np.ndarray, longest: int, budget: int,
                 min_new_tokens: int, stopped: np.ndarray,
                 sampling: tuple | None) -> Iterator[tuple[list[int], list[bool]]]:
        """_steps for one row without a repetition penalty, greedy (`sampling` None) or sampled (`(settings, rng)`,
        one draw a token as `choose`): the same tokens, with a few calls a token."""
        eos = frozenset(self.eos_token_ids)
        eos_ids = np.asarray(sorted(eos), np.int64)
        step_, step_token = self.decoder.step, getattr(self.decoder, "step_token", None)
        for step in range(budget):
            if sampling is None:
                token = int(logits[0].argmax())
                if token in eos and step < min_new_tokens:  # the same token as suppressing EOS first
                    token = int(_without(logits, eos_ids)[0].argmax())
            else:
                if step < min_new_tokens and eos:  # before drawing, as transformers
                    logits = _without(logits, eos_ids)
                token = sample_token(logits[0], *sampling)
            ended = token in eos
            yield [token], [not ended]
            if ended or stopped[0] or step == budget - 1:
                return
            if step_token is not None:  # the decoder's own one-row step (ONNX Runtime, OpenVINO stateful)
                logits, cache = step_token(token, longest + step + 1, cache)
            else:
                logits, cache = step_(np.array([[token]], np.int64), mask[:, :longest + step + 1], position, cache)
                position = position + 1


class _Detokenizer:
    """The text of a growing token sequence, a piece per token. Decoding the whole sequence at every token costs
    O(length) a token (85 us at 1,000 tokens, 171 at 2,000 on the bench tokenizer); this decodes a window from the
    token before the last piece: the window's text minus its first tokens' text is the new piece (the first
    tokens give context, so a tokenizer that drops a leading space at the start of a decode does so on both).
    A window that ends in U+FFFD (a character split across tokens) waits for the rest."""

    def __init__(self, decode, tokens: list[int] | None = None):
        self.decode, self.tokens, self.start, self.read = decode, [] if tokens is None else tokens, 0, 0

    def add(self, token: int) -> str:
        self.tokens.append(token)
        context = self.decode(self.tokens[self.start:self.read])
        window = self.decode(self.tokens[self.start:])
        if len(window) <= len(context) or window.endswith("\ufffd"):
            return ""
        self.start, self.read = self.read, len(self.tokens)
        return window[len(context):]

    def rest(self) -> str:
        """What `add` held back at the end (a character still split when the sequence stopped)."""
        return self.decode(self.tokens[self.start:])[len(self.decode(self.tokens[self.start:self.read])):]


def _without(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`logits` with `ids` at -inf: in place where the backend hands out a writable buffer of its own (the next
    step overwrites it anyway), else a copy."""
    if not logits.flags.writeable:
        logits = logits.copy()
    logits[:, ids] = -np.inf
    return logits


def _as_batch(prompts) -> tuple[list[Prompt], bool]:
    if isinstance(prompts, str):
        return [prompts], True
    if isinstance(prompts, list) and prompts and all(isinstance(p, dict) for p in prompts):
        return [prompts], True  # one conversation
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("pass a prompt, a conversation (list of messages) or a list of them")
    return list(prompts), False


def _stops(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text up to the earliest stop string (excluded), and whether one occurred."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def read_json(path: Path) -> dict:
    """A bundle's JSON file ({} when it is absent)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value
