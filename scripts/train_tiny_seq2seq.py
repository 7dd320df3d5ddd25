"""Train a tiny T5/BART/Marian (the tests' sizes) to copy text, so its logits have the margins of a trained model.

Random-init encoder-decoders have flat logits (PyTorch perplexity near the vocabulary size), on which any int8
rounding flips argmaxes; a model trained on a task says what int8 costs. No trained seq2seq model can be
downloaded here, so this trains one in a minute or two on the shipped corpus: the target is the source itself.

    python scripts/train_tiny_seq2seq.py t5 /tmp/t5-copy --steps 400
    hfexport build --model /tmp/t5-copy --output /tmp/t5-copy-int8          # seq2seq-int8 on cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=["t5", "bart", "marian"])
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy host)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hfexport.data import default_calibration_texts
    from tests.test_seq2seq import make_tiny_seq2seq

    folder = make_tiny_seq2seq(args.output, args.arch)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder))
    # start from the configs' own initialisation, not the tests' wide one
    model = AutoModelForSeq2SeqLM.from_config(model.config)
    texts = [t for t in default_calibration_texts() if t.strip()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(args.steps):
        rows = torch.randint(0, len(texts), (args.batch,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, truncation=True,
                          max_length=args.max_tokens)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    model.eval()
    model.save_pretrained(str(folder))
    print(f"saved {folder}")


if __name__ == "__main__":
    main()
