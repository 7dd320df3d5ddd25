"""Data augmentation for distillation: edited copies of training texts, which the teacher labels afresh."""

from __future__ import annotations

import random


class Augmenter:
    """Edited copies of training texts: still text the teacher can label, but text the student has not seen.

    With a neighbour table (words -> their nearest words in the teacher's token embeddings, as TinyBERT
    used GloVe neighbours) half the copies swap about a third of their words for neighbours: "we bought a
    car" -> "we purchased a car"; the other half are crops, joins or word drops.
    """

    def __init__(self, texts: list[str], seed: int, neighbours: dict[str, list[str]] | None = None):
        self.rng = random.Random(seed + 7919)
        self.texts = texts
        self.words = sorted({w for t in texts for w in t.split() if w.isalpha()})
        self.neighbours = neighbours or {}

    def __call__(self, batch: list[str]) -> list[str]:
        return [self.one(text) for text in batch]

    def one(self, text: str) -> str:
        rng, words = self.rng, text.split()
        if self.neighbours and rng.random() < 0.5:
            swapped = [self._neighbour(w) if rng.random() < 0.35 else w for w in words]
            if swapped != words:
                return " ".join(swapped)
        kind = rng.choice(("crop", "join", "drop", "swap"))
        if kind == "join" or len(words) < 6:
            return f"{text} {rng.choice(self.texts)}"
        if kind == "crop":
            size = rng.randint(max(4, len(words) // 2), len(words) - 1)
            start = rng.randint(0, len(words) - size)
            return " ".join(words[start:start + size])
        # drop or swap: about one word in seven, at least one
        chosen = set(rng.sample(range(len(words)), max(1, round(len(words) * 0.15))))
        if kind == "drop" or not self.words:
            return " ".join(w for i, w in enumerate(words) if i not in chosen)
        return " ".join(rng.choice(self.words) if i in chosen else w for i, w in enumerate(words))

    def _neighbour(self, word: str) -> str:
        core = word.rstrip(_PUNCTUATION)
        options = self.neighbours.get(core.lower())
        if not options:
            return word
        pick = self.rng.choice(options)
        return (pick.capitalize() if core[:1].isupper() else pick) + word[len(core):]


_PUNCTUATION = ".,;:!?\"')"


def embedding_neighbours(model, tokenizer, texts: list[str], k: int = 8) -> dict[str, list[str]]:
    """Each word of `texts` that is a whole token -> its k nearest whole-word tokens in the input embeddings.

    Only words of four letters or more: the neighbours of "the" or "for" are other function words, and
    swapping those breaks sentences rather than varying them.
    """
    import torch
    import torch.nn.functional as F

    vocab = tokenizer.get_vocab()
    names = sorted(t for t in vocab if t.isalpha() and t.isascii() and len(t) > 3)
    if not names:
        return {}
    index = {name: j for j, name in enumerate(names)}
    table = model.get_input_embeddings().weight.detach().float().cpu()
    unit = F.normalize(table[torch.tensor([vocab[n] for n in names])], dim=-1)
    words = sorted({w.rstrip(_PUNCTUATION).lower() for t in texts for w in t.split()} & index.keys())
    out: dict[str, list[str]] = {}
    for start in range(0, len(words), 2048):
        chunk = words[start:start + 2048]
        nearest = (unit[torch.tensor([index[w] for w in chunk])] @ unit.T).topk(k + 1, dim=-1).indices
        for word, row in zip(chunk, nearest.tolist()):
            out[word] = [names[j] for j in row if names[j] != word][:k]
    return out
