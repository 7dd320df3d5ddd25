"""Load a bundle: verify checksums, open the backend the manifest names, run inputs through the task.

The manifest says how inputs become the graph's feeds: a `tokenizer` (text: input_ids, attention_mask,
token_type_ids) or a `processor` (images: pixel_values; audio: input_values); `open_encoder` opens that one.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hfexport.errors import BundleIntegrityError, HfExportError, first_line
from hfexport.runtime.audio import AudioBatch, AudioEncoder, CTCVocabulary
from hfexport.runtime.backends import open_backend
from hfexport.runtime.image import ImageBatch, ImageEncoder
from hfexport.runtime.manifest import Manifest, read_manifest, verify_files
from hfexport.runtime.paths import check_bundle_paths
from hfexport.runtime.tasks import normalise_inputs, task_module
from hfexport.runtime.tokenizer import Batch, TextEncoder


class Predictor:
    """Text or images in, task results out. Safe to call from several threads at once."""

    def __init__(self, manifest: Manifest, encoder: TextEncoder | ImageEncoder | AudioEncoder, backend, path: Path | None = None):
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

    def encode(self, texts) -> Batch | ImageBatch | AudioBatch:
        return self.encoder.encode(texts)

    def forward(self, batch: Batch | ImageBatch | AudioBatch) -> dict[str, np.ndarray]:
        return self.backend.run(batch.feeds(self.backend.input_names))

    def postprocess(self, outputs: dict[str, np.ndarray], batch: Batch | ImageBatch | AudioBatch, texts,
                    **options) -> Any:
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


def pair_truncation(task: str) -> str:
    """How the task's text pairs are cut past max_length (its runtime module's PAIR_TRUNCATION, else the
    second text: question answering's context)."""
    return getattr(task_module(task), "PAIR_TRUNCATION", "only_second")


def open_encoder(bundle: Path, manifest: Manifest) -> TextEncoder | ImageEncoder | AudioEncoder:
    """What turns a user's inputs into the graph's feeds, as the manifest names it: tokenizer or processor."""
    if manifest.processor is not None:
        return _open_processor(bundle, manifest)
    tok = manifest.tokenizer
    if tok is None:
        raise BundleIntegrityError(f"{bundle}: the manifest names neither a tokenizer nor a processor; "
                                   "rebuild the bundle")
    if not 0 < manifest.model.max_length <= 1 << 20:
        raise BundleIntegrityError(f"{bundle}: manifest model.max_length should be 1-{1 << 20} tokens, got "
                                   f"{manifest.model.max_length}")
    if tok.pad_token_id is None or not 0 <= tok.pad_token_id < 1 << 31 or not isinstance(tok.pad_token, str):
        raise BundleIntegrityError(f"{bundle}: manifest tokenizer.pad_token_id and pad_token should name the "
                                   f"padding token, got {tok.pad_token_id!r} and {tok.pad_token!r}")
    with _bundle_errors(bundle / tok.file, "tokenizer"):
        encoder = TextEncoder(bundle / tok.file, max_length=manifest.model.max_length, pad_id=tok.pad_token_id,
                              pad_token=tok.pad_token, pair_truncation=pair_truncation(manifest.model.task))
        encoder.encode(["a"])  # a tokenizer.json that cannot encode at all fails here, not on a user's call
        return encoder


def _open_processor(bundle: Path, manifest: Manifest) -> ImageEncoder | AudioEncoder:
    processor = manifest.processor
    if processor.kind == "audio" and processor.input_name in AudioEncoder.input_names:
        fields = manifest.model.task_fields
        with _bundle_errors(bundle / processor.file, "audio feature extractor"):
            vocabulary = CTCVocabulary(bundle / processor.file.rsplit("/", 1)[0] / "vocab.json",
                                       blank_id=fields["blank_id"], word_delimiter=fields.get("word_delimiter", "|"))
            return AudioEncoder(bundle / processor.file, vocabulary)
    if processor.kind != "image" or processor.input_name not in ImageEncoder.input_names:
        raise BundleIntegrityError(f"{bundle}: manifest processor kind {processor.kind!r} making "
                                   f"{processor.input_name!r} is not supported by this runtime (upgrade hfexport)")
    with _bundle_errors(bundle / processor.file, "image processor"):
        return ImageEncoder(bundle / processor.file)


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
         device: str | None = None, verify: bool = True, session_overrides: dict | None = None,
         public_key: str | Path | None = None):
    """Load a bundle folder. Checksums of every file are verified first unless verify=False.

    Returns a Predictor (encoder tasks) or a TextGenerator (text-generation bundles). `device` runs an
    OpenVINO bundle on another device than its profile names (e.g. "GPU", "NPU", "AUTO"). With
    `public_key` (a PEM file), the bundle must carry a valid signature by that key over every file
    (`hfexport sign`), else SignatureError; the check needs `pip install 'hfexport[sign]'`.
    Every path the manifest names must stay inside the bundle, which may hold no symbolic links.
    """
    bundle = Path(path).expanduser()
    if public_key is not None:
        from hfexport.runtime.signing import verify_bundle

        verify_bundle(bundle, public_key)
    manifest = read_manifest(bundle)
    check_bundle_paths(bundle, manifest)
    if verify or public_key is not None:
        verify_files(bundle, manifest)
    with _bundle_errors(bundle):
        backend = open_model(bundle / manifest.model_file, manifest, providers=providers, threads=threads,
                             device=device, session_overrides=session_overrides)
        opener = getattr(task_module(manifest.model.task), "open_predictor", None)
        if opener is not None:  # a generative task: its own loop over the model
            return opener(manifest, bundle, backend)
        encoder = open_encoder(bundle, manifest)
        _check_inputs(bundle / manifest.model_file, backend.input_names, encoder)
        return Predictor(manifest, encoder, backend, bundle)


def _check_inputs(model_path: Path, names: list[str], encoder) -> None:
    """The model asks only for inputs the encoder makes (a damaged model file can rename one)."""
    if isinstance(encoder, (ImageEncoder, AudioEncoder)):
        made, described = list(encoder.input_names), ", ".join(encoder.input_names)
    else:
        made, described = [item.name for item in dataclasses.fields(Batch)], "input_ids, attention_mask, token_type_ids"
    unknown = [name for name in names if name not in made]
    if unknown:
        raise BundleIntegrityError(f"{model_path}: the model asks for input {unknown[0]!r}, which the runtime "
                                   f"does not make (it feeds {described}); the "
                                   "file is damaged or from another tool: rebuild the bundle")


@contextmanager
def _bundle_errors(bundle: Path, what: str = "bundle"):
    """Whatever a damaged bundle makes a library raise while it opens (a session setting of the wrong type,
    a tokenizer.json the tokenizers library panics on) becomes one BundleIntegrityError naming the bundle.
    NOTE: BaseException, because a Rust panic in tokenizers surfaces as pyo3's PanicException."""
    try:
        yield
    except (HfExportError, KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001
        first = first_line(exc, 200) if str(exc).strip() else ""
        raise BundleIntegrityError(f"{bundle}: the {what} cannot be opened ({type(exc).__name__}: {first}); "
                                   "it is damaged or was written by another tool: rebuild the bundle") from exc
