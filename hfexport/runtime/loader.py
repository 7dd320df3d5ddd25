"""Load a bundle: verify checksums, open the backend the manifest names, run text through the task."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from hfexport.errors import BundleIntegrityError
from hfexport.runtime.backends import open_backend
from hfexport.runtime.manifest import read_manifest, verify_files
from hfexport.runtime.tokenizer import Batch, TextEncoder

_TASK_MODULES = {
    "feature-extraction": "feature_extraction",
    "text-classification": "text_classification",
    "token-classification": "token_classification",
    "question-answering": "question_answering",
    "fill-mask": "fill_mask",
}


class Predictor:
    """Text in, task results out. Safe to call from several threads at once."""

    def __init__(self, manifest: dict, encoder: TextEncoder, backend, path: Path | None = None):
        self.path = path
        self.manifest = manifest
        self.task: str = manifest["model"]["task"]
        if self.task not in _TASK_MODULES:
            raise BundleIntegrityError(f"task {self.task!r} is not supported by this runtime")
        self._post = importlib.import_module(f"hfexport.runtime.tasks.{_TASK_MODULES[self.task]}").postprocess
        self.encoder = encoder
        self.backend = backend

    def __repr__(self) -> str:
        return f"<Predictor {self.manifest['model']['id']} task={self.task} backend={self.backend.backend}>"

    # -- the steps, public so validation measures exactly what users run --------------------------

    def encode(self, texts) -> Batch:
        return self.encoder.encode(texts)

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.backend.run(batch.feeds(self.backend.input_names))

    def postprocess(self, outputs: dict[str, np.ndarray], batch: Batch, texts, **options) -> Any:
        return self._post(outputs, batch, self.manifest["model"], texts, self.encoder, **options)

    # -- the one call users make ---------------------------------------------------------------------

    def __call__(self, texts=None, *, question=None, context=None, batch_size: int = 32, **options) -> Any:
        texts = self._normalise_inputs(texts, question, context)
        results: list[Any] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            batch = self.encode(chunk)
            results.append(self.postprocess(self.forward(batch), batch, chunk, **options))
        if isinstance(results[0], np.ndarray):
            return np.concatenate(results)
        return [item for part in results for item in part]

    def _normalise_inputs(self, texts, question, context) -> list:
        if self.task == "question-answering":
            if question is not None or context is not None:
                if question is None or context is None:
                    raise ValueError("question answering needs both question= and context=")
                texts = [(question, context)]
            if texts and isinstance(texts, tuple) and len(texts) == 2 and isinstance(texts[0], str):
                texts = [texts]
            if not texts or not all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
                raise ValueError("question answering takes (question, context) pairs")
            return [tuple(t) for t in texts]
        if isinstance(texts, str):
            texts = [texts]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("pass a string or a list of strings")
        return list(texts)


def open_encoder(bundle: Path, manifest: dict) -> TextEncoder:
    tok = manifest["tokenizer"]
    return TextEncoder(bundle / tok["file"], max_length=manifest["model"]["max_length"],
                       pad_id=tok["pad_token_id"], pad_token=tok["pad_token"])


def open_model(model_path: Path, manifest: dict, *, providers=None, threads=None, backend: str | None = None,
               device: str | None = None, session_overrides: dict | None = None):
    """The backend session for one model file, configured as the manifest's target says.

    `session_overrides` replaces session settings for this process only (validation switches ONNX
    Runtime's thread spinning off so sessions side by side do not steal each other's cores).
    """
    target = manifest["target"]
    session = dict(target.get("session") or {}, execution_providers=target.get("execution_providers"),
                   **(session_overrides or {}))
    return open_backend(backend or target["backend"], model_path, session, providers=providers, threads=threads,
                        device=device)


def load(path: str | Path, *, providers: list[str] | None = None, threads: int | None = None,
         device: str | None = None, verify: bool = True, session_overrides: dict | None = None):
    """Load a bundle folder. Checksums of every file are verified first unless verify=False.

    Returns a Predictor (encoder tasks) or a TextGenerator (text-generation bundles). `device` runs an
    OpenVINO bundle on another device than its profile names (e.g. "GPU", "NPU", "AUTO").
    """
    bundle = Path(path).expanduser()
    manifest = read_manifest(bundle)
    if verify:
        verify_files(bundle, manifest)
    backend = open_model(bundle / manifest["model_file"], manifest, providers=providers, threads=threads,
                         device=device, session_overrides=session_overrides)
    if manifest["model"]["task"] == "text-generation":
        from hfexport.runtime.generation import TextGenerator

        return TextGenerator(manifest, bundle, backend, bundle / manifest["tokenizer"]["file"])
    return Predictor(manifest, open_encoder(bundle, manifest), backend, bundle)
