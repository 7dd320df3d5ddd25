"""Peak resident memory of a fresh process that loads one stage and runs the evaluation batch.

A child process per stage, because the build process holds every stage at once: its own peak says
nothing about what one deployed model needs. The child for the bundle imports only the runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, resource, sys
from pathlib import Path
kind, path, texts_file, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
inputs = json.loads(open(texts_file).read())
inputs = [tuple(x) if isinstance(x, list) else x for x in inputs]
if kind == "torch":
    import torch, transformers
    torch.set_num_threads(threads)
    task_class, tokenizer_dir = sys.argv[5], sys.argv[6]
    model = getattr(transformers, task_class).from_pretrained(path).eval()
    if Path(tokenizer_dir, "vocab.json").is_file() and Path(tokenizer_dir, "preprocessor_config.json").is_file():
        from hfexport.runtime.audio import read_wav  # speech: inputs are .wav files
        extractor = transformers.AutoFeatureExtractor.from_pretrained(tokenizer_dir)
        rate = extractor.sampling_rate
        enc = extractor([read_wav(p, rate) for p in inputs], sampling_rate=rate, padding=True, return_tensors="pt")
    elif Path(tokenizer_dir, "preprocessor_config.json").is_file():  # an image task: inputs are image files
        from PIL import Image
        processor = transformers.AutoImageProcessor.from_pretrained(tokenizer_dir)
        enc = processor(images=[Image.open(p).convert("RGB") for p in inputs], return_tensors="pt")
    elif isinstance(inputs[0], tuple):
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
        # longest_first: never refuses a pair (zero-shot's hypothesis is too short to take the whole cut)
        enc = tokenizer([a for a, _ in inputs], [b for _, b in inputs], padding=True, truncation="longest_first",
                        return_tensors="pt")
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
        enc = tokenizer(inputs, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():  # a dual encoder (CLIP): its image tower, as the bundle's embed_image
        (model.get_image_features if hasattr(model, "get_text_features") else model)(**enc)
else:
    from hfexport.runtime import load
    from hfexport.runtime.loader import Predictor, open_encoder, open_model
    from hfexport.runtime.manifest import read_manifest
    if kind == "bundle":
        predictor = load(path, threads=threads)
    else:
        bundle, backend = sys.argv[5], sys.argv[6]
        manifest = read_manifest(Path(bundle))
        model = open_model(Path(path), manifest, threads=threads, backend=backend)
        if manifest.tokenizer is not None and manifest.processor is not None:  # a dual encoder's two graphs
            from hfexport.runtime.dual_encoder import open_dual_encoder
            text = Path(path).with_name("text_model" + Path(path).suffix)
            predictor = open_dual_encoder(manifest, Path(bundle), model, text)
        else:
            predictor = Predictor(manifest, open_encoder(Path(bundle), manifest), model)
    getattr(predictor, "embed_image", predictor)(inputs)  # a dual encoder: the image tower
# NOTE: VmHWM, not ru_maxrss (docs/decisions/0002-peak-memory-in-a-fresh-process.md).
peak = None
try:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
except OSError:
    pass
print(json.dumps({"peak_rss_mb": peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_rss_mb(kind: str, path: Path, inputs: list, threads: int, scratch: Path, *extra: str) -> float | None:
    """Peak RSS in MB of a child that loads `path` (kind: torch | bundle | stage) and runs `inputs` once."""
    texts_file = scratch / "memory-inputs.json"
    texts_file.write_text(json.dumps(_as_json(inputs, scratch)))
    try:
        out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path), str(texts_file), str(threads), *extra],
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _as_json(inputs: list, scratch: Path) -> list:
    """Texts as they are; images (HxWx3 uint8 arrays) written as PNG files the child opens by path."""
    import numpy as np

    if not inputs or not isinstance(inputs[0], np.ndarray):
        return inputs
    if inputs[0].ndim == 1:  # audio clips (16 kHz, the generated clips' rate) as .wav files
        from hfexport.runtime.audio import write_wav

        for index, clip in enumerate(inputs):
            write_wav(scratch / f"memory-input-{index}.wav", clip, 16000)
        return [str(scratch / f"memory-input-{index}.wav") for index in range(len(inputs))]
    from PIL import Image

    paths = []
    for index, image in enumerate(inputs):
        path = scratch / f"memory-input-{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths
