"""Export a PyTorch model to OpenVINO IR (model.xml + model.bin) with dynamic batch and sequence axes.

`openvino.convert_model` traces the task's module with the sample batch; the IR is then compiled on
the CPU at f32 and checked against PyTorch like the ONNX export. NOTE: the check sets f32 on purpose:
left to itself, OpenVINO runs in bf16 on CPUs with AVX512-BF16 and the check would measure that instead.
"""

from __future__ import annotations

from pydantic import Field

from hfexport.artifacts import OpenVINOModel, TorchModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import ExportError, PlanError
from hfexport.passes._torch_graph import check_against_torch, task_graph
from hfexport.passes.base import Pass, PassConfig
from hfexport.tasks import TASKS


class ExportOpenVINOConfig(PassConfig):
    # NOTE: off by default. fp16 weights halve the file, but every later step (and the check against
    # PyTorch) then starts from rounded weights; int8 quantisation shrinks the file more anyway.
    compress_to_fp16: bool = Field(False, description="store float weights as fp16 (decompressed on load)")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference to PyTorch on the sample batch")


class ExportOpenVINOPass(Pass[ExportOpenVINOConfig]):
    name = "export_openvino"
    summary = "PyTorch -> OpenVINO IR with dynamic batch and sequence axes, checked against PyTorch"
    consumes = TorchModel
    produces = OpenVINOModel
    config_class = ExportOpenVINOConfig

    def check(self, plan: PlanContext) -> None:
        if plan.target.artifact != "openvino":
            raise PlanError(f"target {plan.target.name!r} deploys {plan.target.artifact}, not OpenVINO IR; "
                            f"use export_onnx, or --target openvino")
        if TASKS[plan.source.task].generative:
            raise PlanError(f"{plan.source.task} needs a KV cache: use export_openvino_generation "
                            f"(e.g. --recipe openvino-llm-fp32 or openvino-llm-int4)")

    def run(self, artifact: TorchModel, ctx: BuildContext) -> OpenVINOModel:
        import openvino as ov
        import torch

        graph = task_graph(ctx.torch_module(artifact.path), ctx.hf_tokenizer(), ctx.source.task)
        path = ctx.stage_dir(self.name) / "model.xml"
        try:
            with torch.inference_mode():
                model = ov.convert_model(graph.wrapper, example_input=graph.sample_inputs(),
                                         input=[(ov.PartialShape([-1, -1]), ov.Type.i64)] * len(graph.input_names))
            # Traced graphs carry positional names; the runtime feeds and reads by the task's names.
            for port, name in zip(model.inputs, graph.input_names):
                port.get_tensor().set_names({name})
            for port, name in zip(model.outputs, graph.output_names):
                port.get_tensor().set_names({name})
            ov.save_model(model, str(path), compress_to_fp16=self.config.compress_to_fp16)
        except Exception as exc:  # the converter raises anything; the first line is what the user needs
            raise ExportError(f"OpenVINO export failed: {str(exc).splitlines()[0]}") from exc

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled.create_infer_request().infer(graph.sample_feeds())
        got = [result[compiled.output(name)] for name in graph.output_names]
        worst = check_against_torch(graph, got, self.config.tolerance, what="OpenVINO IR")
        return OpenVINOModel(path, tuple(graph.input_names), tuple(graph.output_names),
                             stats={"nodes": len(model.get_ops()), "max_abs_diff_vs_torch": worst,
                                    "weights": "fp16" if self.config.compress_to_fp16 else "fp32"})
