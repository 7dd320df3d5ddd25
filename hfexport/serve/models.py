"""The served models: each loaded bundle under its name, with its batcher or generation queue."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hfexport.errors import ConfigError
from hfexport.serve.batching import EncoderBatcher
from hfexport.serve.config import ServeConfig
from hfexport.serve.errors import bad_request, model_not_found
from hfexport.serve.generation import GenerationQueue
from hfexport.serve.metrics import Metrics

GENERATIVE = "text-generation"
# The tasks a route serves (hfexport/serve/routes_*.py); a bundle of another task is refused at start-up.
SERVED_TASKS = frozenset({"feature-extraction", "text-classification", "token-classification", "question-answering",
                          "fill-mask", GENERATIVE})
# NOTE: ONNX Runtime's idle threads spin for the next call by default; in a server they would take
# the cores the event loop needs between batches (docs/decisions/0090-serve-dynamic-batching.md).
NO_SPIN = {"allow_spinning": False}


@dataclass
class ServedModel:
    name: str
    task: str
    runtime: object  # a Predictor, or a TextGenerator for text generation
    created: int
    batcher: EncoderBatcher | None = None
    generation: GenerationQueue | None = None

    @property
    def max_length(self) -> int:
        return self.runtime.manifest.model.max_length

    def describe(self) -> dict:
        """The /v1/models entry: OpenAI's fields, plus the task and the bundle's facts."""
        manifest = self.runtime.manifest
        entry = {"id": self.name, "object": "model", "created": self.created, "owned_by": "hfexport",
                 "task": self.task, "source": manifest.model.id, "max_length": self.max_length,
                 "backend": manifest.target.backend, "precision": manifest.target.precision}
        if self.batcher is not None:
            entry["batching"] = {"enabled": self.batcher.combine, "max_batch_size": self.batcher.max_batch_size,
                                 "max_wait_ms": self.batcher.max_wait_s * 1000,
                                 "results_depend_on_batch": self.batch_dependent}
        return entry

    @property
    def batch_dependent(self) -> bool:
        """Whether a text's result depends on the texts batched with it: dynamic int8 quantises activations
        with one range per call (docs/decisions/0092-dynamic-int8-and-batching.md)."""
        return any(p.name == "quantize" and p.params.get("mode") == "dynamic" and not p.params.get("weights_only")
                   for p in self.runtime.manifest.passes)

    def depth(self) -> int:
        queue = self.batcher or self.generation
        return queue.depth() if queue is not None else 0

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.generation is not None:
            self.generation.close()


class Models:
    """Served models by name; `pick(name, tasks)` finds the one a request addresses, or raises 400/404."""

    def __init__(self, models: list[ServedModel]):
        self.by_name = {m.name: m for m in models}

    def __iter__(self):
        return iter(self.by_name.values())

    def pick(self, name: str | None, tasks: tuple[str, ...], route: str) -> ServedModel:
        if name is None:
            fitting = [m for m in self if m.task in tasks]
            if len(fitting) != 1:
                raise bad_request(f"'model' is required: {len(fitting)} served models do {'/'.join(tasks)}",
                                  param="model")
            return fitting[0]
        model = self.by_name.get(name)
        if model is None:
            raise model_not_found(name, list(self.by_name))
        if model.task not in tasks:
            raise bad_request(f"model {name!r} is a {model.task} model; {route} needs {' or '.join(tasks)}",
                              param="model", code="wrong_task")
        return model

    def close(self) -> None:
        for model in self:
            model.close()


def wrap(runtime, name: str, config: ServeConfig, metrics: Metrics) -> ServedModel:
    """A loaded runtime object (from `hfexport.runtime.load`) ready to serve, with its queue started."""
    task = runtime.task
    model = ServedModel(name, task, runtime, int(time.time()))
    if task == GENERATIVE:
        model.generation = GenerationQueue(runtime, name, concurrency=config.generation_concurrency,
                                           max_queue=config.max_queue, metrics=metrics)
    else:
        bundle_batch = runtime.manifest.recipe.evaluation.get("batch_size")
        size, wait = config.batching_for(name, bundle_batch)
        model.batcher = EncoderBatcher(runtime, name, max_batch_size=size, max_wait_s=wait, combine=config.batching,
                                       max_queue=config.max_queue, metrics=metrics)
    return model


def load_models(bundles: list[str | Path], names: list[str] | None, config: ServeConfig,
                metrics: Metrics) -> Models:
    """Load every bundle (checksums verified) and start its queue; names default to the folder names."""
    from hfexport.runtime import load
    from hfexport.runtime.manifest import read_manifest

    names = list(names or [])
    if len(names) > len(bundles):
        raise ConfigError(f"{len(names)} names for {len(bundles)} bundles")
    paths = [Path(b).expanduser() for b in bundles]
    names += [p.resolve().name for p in paths[len(names):]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two bundles would both be served as {duplicates[0]!r}; name them with --name")
    unknown = sorted(set(config.models) - set(names))
    if unknown:
        raise ConfigError(f"batching settings for {unknown[0]!r}, which is not served (served: {', '.join(names)})")
    served: list[ServedModel] = []
    try:
        for path, name in zip(paths, names):
            task = read_manifest(path).model.task
            if task not in SERVED_TASKS:  # no route takes it yet (images, audio, text-to-text): say so, not crash
                raise ConfigError(f"{path}: hfexport serve has no route for {task} bundles yet (it serves "
                                  f"{', '.join(sorted(SERVED_TASKS))}); call hfexport.runtime.load(bundle) from "
                                  "your app instead")
            runtime = load(path, threads=config.threads, session_overrides=None if config.spin else NO_SPIN)
            served.append(wrap(runtime, name, config, metrics))
    except BaseException:
        for model in served:
            model.close()
        raise
    return Models(served)
