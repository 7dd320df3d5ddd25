"""export: PyTorch -> the target's format, checked against PyTorch. The target's backend picks the format
(ONNX, OpenVINO IR) and the task the graph: an encoder graph with dynamic batch and sequence axes, or for a
text-generation model one graph with a KV cache, checked by greedy decoding.

A recipe may set any option of any backend's export (`ExportConfig`); the planner refuses one that means
nothing for the chosen backend and graph, naming the field. After planning, the step's config is the
backend's own export config, which is what the manifest records.
"""

from __future__ import annotations

import pydantic

from hfexport._yaml import format_validation_error
from hfexport.artifacts import Artifact, TorchModel
from hfexport.backends import Backend, all_backends, get_backend
from hfexport.backends.options import ExportConfig
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes._stats import graph_stats_parts
from hfexport.passes.base import Pass, PassConfig
from hfexport.tasks import get_task


class ExportPass(Pass[ExportConfig]):
    name = "export"
    summary = "PyTorch -> the target's format (ONNX or OpenVINO IR; KV-cache graph for text generation), checked"
    consumes = TorchModel
    produces = None  # the target's artifact kind: see output_kind
    config_class = ExportConfig
    data_inputs = frozenset()

    def __init__(self, config: PassConfig, backend: Backend | None = None, generative: bool | None = None):
        super().__init__(config)
        self.backend, self.generative = backend, generative

    def describe(self) -> str:
        if self.backend is None:
            return self.name
        graph = ["generation"] if self.generative else []
        return f"{self.name}({', '.join([self.backend.artifact.kind, *graph, *self.config.describe_parts()])})"

    def check(self, plan: PlanContext) -> None:
        backend, generative = _route(plan)
        if generative and plan.source.config.get("is_encoder_decoder") and backend.name not in _SEQ2SEQ_BACKENDS:
            raise PlanError(f"{plan.source.task}: the {backend.title} backend of target {plan.target.name!r} has no "
                            f"encoder-decoder export yet; build it for --target cpu or --target openvino")
        modality = get_task(plan.source.task).modality
        if modality not in backend.modalities:
            raise PlanError(f"{plan.source.task}: the {backend.title} backend of target {plan.target.name!r} does not "
                            f"export {modality} models yet; build it for --target cpu or --target openvino")
        route_config(self.config, backend, generative, plan.target.name)

    def for_target(self, plan: PlanContext) -> ExportPass:
        backend, generative = _route(plan)
        return type(self)(route_config(self.config, backend, generative, plan.target.name), backend, generative)

    def output_kind(self, given: type[Artifact]) -> type[Artifact]:  # a planned step: the backend's kind
        if self.backend is None:
            raise PlanError("the export step's format depends on the target: plan it first")
        return self.backend.artifact

    def run(self, artifact: TorchModel, ctx: BuildContext) -> Artifact:
        backend, generative = (self.backend, self.generative) if self.backend else _route(ctx)
        config = route_config(self.config, backend, generative, ctx.target.name)
        return backend.export(config, generative, artifact, ctx, ctx.stage_dir(self.name))

    def stats_parts(self, stats: dict) -> list[str]:
        return graph_stats_parts(stats)


# Backends with an encoder-decoder (two-graph) export: backends/_onnx/seq2seq.py, backends/_openvino/seq2seq.py.
_SEQ2SEQ_BACKENDS = frozenset({"onnxruntime", "openvino"})


def _route(ctx: PlanContext | BuildContext) -> tuple[Backend, bool]:
    return get_backend(ctx.target.backend), get_task(ctx.source.task).generative


def route_config(config: PassConfig, backend: Backend, generative: bool, target: str) -> PassConfig:
    """The recipe's export options as `backend`'s own export config; PlanError for one it does not take."""
    wanted = backend.export_config_class(generative)
    if isinstance(config, wanted):
        return config
    graph = "text-generation" if generative else "encoder"
    stray = sorted(config.model_fields_set - set(wanted.model_fields))
    if stray:
        raise PlanError(f"{stray[0]} applies to {_where_it_applies(stray[0])} exports, not to the {graph} export "
                        f"of target {target!r} ({backend.name}); remove {stray[0]}")
    try:
        return wanted.model_validate(config.model_dump(include=config.model_fields_set))
    except pydantic.ValidationError as exc:
        raise PlanError(format_validation_error(f"{backend.name} {graph} export", exc)) from exc


def _where_it_applies(field: str) -> str:
    places = [f"{backend.name} {'text-generation' if generative else 'encoder'}"
              for backend in all_backends() for generative in (False, True)
              if field in backend.export_config_class(generative).model_fields]
    return " and ".join(places)
