"""Load a bundle: verify checksums, open the backend the manifest names, run text through the task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hfexport.runtime.backends import open_backend
from hfexport.runtime.manifest import Manifest, read_manifest, verify_files
from hfexport.runtime.tasks import normalise_inputs, task_module
from hfexport.runtime.tokenizer import Batch, TextEncoder


class Predictor:
    """Text in, task results out. Safe to call from several threads at once."""

    def __init__(self, manifest: Manifest, encoder: TextEncoder, backend, path: Path | None = None):
        self.path = path
        self.manifest = manifest
        self.task: str = manifest.model.task
        module = task_module(self.task)
        self._post = module.postprocess
        self._inputs = getattr(module, "normalise_inputs", normalise_inputs)
        # A task whose graph sees more rows than the user gave (zero-shot: one text x each label) expands them.
        self._expand = getattr(module, "expand_inputs", None)
        self.encoder = encoder
        self.backend = backend

    def __repr__(self) -> str:
        return f"<Predictor {self.manifest.model.id} task={self.task} backend={self.backend.backend}>"

    # -- the steps, public so validation measures exactly what users run --------------------------

    def encode(self, texts) -> Batch:
        return self.encoder.encode(texts)

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.backend.run(batch.feeds(self.backend.input_names))

    def postprocess(self, outputs: dict[str, np.ndarray], batch: Batch, texts, **options) -> Any:
        return self._post(outputs, batch, self.manifest.model, texts, self.encoder, **options)

    # -- the one call users make ---------------------------------------------------------------------

    def __call__(self, texts=None, *, question=None, context=None, batch_size: int = 32, **options) -> Any:
        texts = self._inputs(texts, question, context)
        results: list[Any] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            batch = self.encode(self._expand(chunk, **options) if self._expand else chunk)
            results.append(self.postprocess(self.forward(batch), batch, chunk, **options))
        if isinstance(results[0], np.ndarray):
            return np.concatenate(results)
        return [item for part in results for item in part]


def open_encoder(bundle: Path, manifest: Manifest) -> TextEncoder:
    tok = manifest.tokenizer
    return TextEncoder(bundle / tok.file, max_length=manifest.model.max_length, pad_id=tok.pad_token_id,
                       pad_token=tok.pad_token)


def open_model(model_path: Path, manifest: Manifest, *, providers=None, threads=None, backend: str | None = None,
               device: str | None = None, session_overrides: dict | None = None):
    """The backend session for one model file, configured as the manifest's target says.

    `session_overrides` replaces session settings for this process only (validation switches ONNX
    Runtime's thread spinning off so sessions side by side do not steal each other's cores).
    """
    target = manifest.target
    session = dict(target.session, execution_providers=target.execution_providers, **(session_overrides or {}))
    return open_backend(backend or target.backend, model_path, session, providers=providers, threads=threads,
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
    backend = open_model(bundle / manifest.model_file, manifest, providers=providers, threads=threads,
                         device=device, session_overrides=session_overrides)
    opener = getattr(task_module(manifest.model.task), "open_predictor", None)
    if opener is not None:  # a generative task: its own loop over the model
        return opener(manifest, bundle, backend)
    return Predictor(manifest, open_encoder(bundle, manifest), backend, bundle)
