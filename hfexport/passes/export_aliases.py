"""Deprecated pass types, kept for one release: export_onnx, export_openvino, export_onnx_generation and
export_openvino_generation are `export` pinned to one format and one graph, with their old options and
their old refusals. A recipe that uses one plans as before and the plan notes the rename.
"""

from __future__ import annotations

from typing import ClassVar

from hfexport.artifacts import OnnxModel, OpenVINOModel
from hfexport.backends._onnx.export import ExportOnnxConfig, ExportOnnxGenerationConfig
from hfexport.backends._openvino.export import ExportOpenVINOConfig, ExportOpenVINOGenerationConfig
from hfexport.context import PlanContext
from hfexport.errors import PlanError
from hfexport.passes.export import ExportPass
from hfexport.tasks import get_task

__all__ = ["ExportOnnxConfig", "ExportOnnxGenerationConfig", "ExportOnnxGenerationPass", "ExportOnnxPass",
           "ExportOpenVINOConfig", "ExportOpenVINOGenerationConfig", "ExportOpenVINOGenerationPass",
           "ExportOpenVINOPass"]


class _PinnedExport(ExportPass):
    artifact: ClassVar[str]  # the target artifact this old pass wrote
    generative_graph: ClassVar[bool]
    format_hint: ClassVar[str]  # what the old error told a user on a target with another format
    graph_hint: ClassVar[str]  # ... and on a model of the other task family

    @property
    def deprecation(self) -> str:
        return (f"pass type {self.name} is deprecated: write `export` (the target picks the format, the task the "
                f"graph); {self.name} goes in the next release")

    def describe(self) -> str:
        parts = self.config.describe_parts()
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def check(self, plan: PlanContext) -> None:
        target, task = plan.target, plan.source.task
        if target.artifact != self.artifact:
            raise PlanError(f"target {target.name!r} deploys {target.artifact}, not {self.format_hint}")
        if get_task(task).generative != self.generative_graph:
            raise PlanError(self.graph_hint.format(task=task))
        super().check(plan)


class ExportOnnxPass(_PinnedExport):
    name = "export_onnx"
    summary = "deprecated: `export` on an onnxruntime target (encoder graph)"
    produces = OnnxModel
    config_class = ExportOnnxConfig
    artifact, generative_graph = "onnx", False
    format_hint = "ONNX"
    graph_hint = "{task} needs a KV cache: use export_onnx_generation, or `export` (e.g. --recipe llm-fp32 or llm-int4)"


class ExportOpenVINOPass(_PinnedExport):
    name = "export_openvino"
    summary = "deprecated: `export` on an openvino target (encoder graph)"
    produces = OpenVINOModel
    config_class = ExportOpenVINOConfig
    artifact, generative_graph = "openvino", False
    format_hint = "OpenVINO IR; use export_onnx, `export`, or --target openvino"
    graph_hint = "{task} needs a KV cache: use export_openvino_generation, or `export` (e.g. --recipe llm-int4)"


class ExportOnnxGenerationPass(_PinnedExport):
    name = "export_onnx_generation"
    summary = "deprecated: `export` of a text-generation model on an onnxruntime target (KV-cache graph)"
    produces = OnnxModel
    config_class = ExportOnnxGenerationConfig
    artifact, generative_graph = "onnx", True
    format_hint = "ONNX"
    graph_hint = "exports text-generation models, not {task}; use export_onnx, or `export`"


class ExportOpenVINOGenerationPass(_PinnedExport):
    name = "export_openvino_generation"
    summary = "deprecated: `export` of a text-generation model on an openvino target (stateful KV-cache IR)"
    produces = OpenVINOModel
    config_class = ExportOpenVINOGenerationConfig
    artifact, generative_graph = "openvino", True
    format_hint = "OpenVINO IR; use export_onnx_generation, `export`, or --target openvino"
    graph_hint = "exports text-generation models, not {task}; use export_openvino, or `export`"
