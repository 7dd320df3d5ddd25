"""Train the tests' tiny Whisper (tests/whisper_models.py) to transcribe generated tone clips, so int8 can be
measured on a model with a trained model's margins (random weights give near-flat logits; decision 0163).

Each clip is 1 s: two 0.5 s tones, each at one of six frequencies, the transcript the two matching words
("one four"). `python scripts/train_tiny_whisper.py OUT [--steps 300] [--threads 2]` saves the trained folder
(model, processor, generation config) at OUT and prints the loss and the greedy accuracy on held-out clips.

NOTE: measured once on the shared 2-core machine (about 7.4 s a step at batch 8): 100 steps took the loss from
8.9 to 0.7, i.e. the transcript format (two of the six words, then the end token) but not yet which tone is which
word (2 of 16 held-out clips right). More steps are needed before its int8 numbers say what int8 costs a trained
Whisper (docs/decisions/0163-whisper.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

WORDS = ["one", "two", "three", "four", "five", "six"]
FREQUENCIES = [300.0, 500.0, 800.0, 1200.0, 1800.0, 2600.0]
RATE = 16000


def tone_clip(first: int, second: int, rng) -> np.ndarray:
    t = np.arange(RATE // 2) / RATE
    parts = []
    for index in (first, second):
        phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.5)
        parts.append(amplitude * np.sin(2 * np.pi * FREQUENCIES[index] * t + phase))
    clip = np.concatenate(parts) + 0.01 * rng.standard_normal(RATE)
    return clip.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hfexport.backends._whisper import restore_generation_config
    from tests.whisper_models import make_whisper_model

    torch.set_num_threads(args.threads)
    folder = make_whisper_model(args.out, multilingual=True)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(str(folder), attn_implementation="eager")
    restore_generation_config(model, folder / "generation_config.json")
    extractor = transformers.AutoFeatureExtractor.from_pretrained(str(folder))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    gen = model.generation_config
    prefix = [gen.decoder_start_token_id, gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"],
              gen.no_timestamps_token_id]
    rng = np.random.default_rng(0)

    def batch(size):
        pairs = rng.integers(0, len(WORDS), (size, 2))
        clips = [tone_clip(a, b, rng) for a, b in pairs]
        texts = [f" {WORDS[a]} {WORDS[b]}" for a, b in pairs]
        feats = extractor(clips, sampling_rate=RATE, return_tensors="pt")["input_features"]
        targets = [tokenizer(t, add_special_tokens=False)["input_ids"] + [gen.eos_token_id[0] if isinstance(
            gen.eos_token_id, list) else gen.eos_token_id] for t in texts]
        width = max(len(t) for t in targets)
        ids = torch.full((size, len(prefix) + width), gen.eos_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        for row, target in enumerate(targets):
            ids[row, :len(prefix)] = torch.tensor(prefix)
            ids[row, len(prefix):len(prefix) + len(target)] = torch.tensor(target)
            labels[row, len(prefix) - 1:len(prefix) - 1 + len(target)] = torch.tensor(target)
        return feats, ids, labels, texts

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    started = time.time()
    for step in range(args.steps):
        feats, ids, labels, _ = batch(args.batch)
        logits = model(input_features=feats, decoder_input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - started:.0f}s)", flush=True)
    model.eval()
    feats, _, _, texts = batch(16)
    with torch.inference_mode():
        out = model.generate(feats, max_new_tokens=8, language="en", task="transcribe")
    decoded = [" ".join(t.split()) for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    right = sum(d == " ".join(t.split()) for d, t in zip(decoded, texts))
    print(f"held-out greedy transcripts right: {right}/16 (e.g. {decoded[0]!r} for {texts[0].strip()!r})")
    model.save_pretrained(str(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
