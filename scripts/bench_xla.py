"""An XLA (tpu target) encoder bundle through jax vs PyTorch eager fp32, in one process, on the CPU.

    python scripts/bench_xla.py BUNDLE [--threads 1] [--rounds 5]
    python scripts/bench_xla.py BUNDLE --device gpu     # jax on CUDA (jax[cuda13]) beside PyTorch eager on the GPU

Fidelity: cosine of the bundle's sentence vectors to PyTorch fp32's on the shipped held-out text. Speed:
the model forward alone (tokenised input, batch 32 x 128 tokens and batch 1 x 128), timed in alternating
blocks so both sides see the same machine load; prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: the bundle through jax on CUDA, PyTorch eager on the same GPU (issue 15's GPU check; "
                             "not yet run: no GPU has been lent)")
    args = parser.parse_args()
    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))

    from hfexport.runtime import load  # jax first: its CPU thread setting is read when it starts

    bundle = load(args.bundle, threads=args.threads, device=args.device)
    import numpy as np
    import torch
    import transformers

    from hfexport.data import default_calibration_texts

    torch.set_num_threads(args.threads)
    manifest = bundle.manifest
    folder = Path(manifest.model.id)
    if not folder.is_dir():  # the packaged all-MiniLM-L6-v2 is recorded by its hub id
        from hfexport.loading import packaged_default_model

        folder = packaged_default_model()[0]
    on = "cuda" if args.device == "gpu" else "cpu"
    torch_model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval().to(on)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))

    texts = default_calibration_texts()[-64:]
    got = bundle(texts)
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=manifest.model.max_length,
                        return_tensors="pt")
        hidden = torch_model(**{k: v.to(on) for k, v in enc.items()}).last_hidden_state.cpu()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        want = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        want /= np.linalg.norm(want, axis=1, keepdims=True)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print(f"precision {manifest.target.precision}: cosine to PyTorch fp32 on {len(texts)} texts "
          f"mean {cos.mean():.6f} min {cos.min():.8f}")

    for batch in (32, 1):
        chunk = (texts * 2)[:batch]
        feeds = tokenizer(chunk, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
        numpy_feeds = {k: v.numpy() for k, v in feeds.items()}
        feeds = {k: v.to(on) for k, v in feeds.items()}
        bundle.backend.run(numpy_feeds)  # compile
        times: dict[str, list[float]] = {"jax": [], "torch": []}
        for _ in range(args.rounds):
            for side in ("jax", "torch"):
                start = time.perf_counter()
                for _ in range(3):
                    if side == "jax":
                        bundle.backend.run(numpy_feeds)
                    else:
                        with torch.inference_mode():
                            torch_model(**feeds)
                        if on == "cuda":
                            torch.cuda.synchronize()
                times[side].append((time.perf_counter() - start) / 3)
        jax_s, torch_s = statistics.median(times["jax"]), statistics.median(times["torch"])
        print(f"batch {batch} x 128, {args.device}, {args.threads} thread(s): jax {jax_s * 1e3:.1f} ms, PyTorch eager "
              f"{torch_s * 1e3:.1f} ms -> {torch_s / jax_s:.2f}x PyTorch")
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())
