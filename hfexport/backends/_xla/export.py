"""PyTorch -> a jax.export artifact (serialized StableHLO for tpu, cuda and cpu) + safetensors weights.

The route: `torch.export` (symbolic batch and sequence, int32 token inputs, eager attention) -> torchax
(`exported_program_to_jax`, each aten op as jax) -> `jax.export.export(jax.jit(fn), platforms=...)`. The
weights stay arguments of the function instead of constants baked into the module, so the module is small
(68 KB for MiniLM) and the weights are one safetensors file the runtime places on the device once.

NOTE: the two symbolic dimensions are made in one `jax.export.symbolic_shape("b, s")` scope; torchax's own
shape extraction makes one scope per dimension, which jax refuses ("Invalid mixing of symbolic scopes"), and
`s <= max_length` lets jax simplify BERT's `position_ids[:, :s]` (docs/decisions/0100-xla-export-route.md).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from hfexport.artifacts import StableHLOModel, TorchModel
from hfexport.backends._torch_graph import TaskGraph, check_against_torch, task_graph, wrap
from hfexport.context import BuildContext
from hfexport.errors import ExportError, first_line
from hfexport.passes.base import PassConfig

MODEL_FILE, WEIGHTS_FILE = "model.jax", "weights.safetensors"
# NOTE: bf16 differs from PyTorch fp32 by ~1e-2 on hidden states; the export check there is a sanity bound,
# the fidelity gates judge the bundle (docs/decisions/0101-xla-bf16-compute.md).
BF16_TOLERANCE = 0.25


class ExportXlaConfig(PassConfig):
    """Options of an XLA (jax.export) encoder export."""

    precision: Literal["fp32", "bf16"] | None = Field(None, description="xla: compute precision (null = fp32)")
    tolerance: float = Field(1e-3, gt=0, description="max abs difference to PyTorch on the sample batch (fp32)")

    def describe_parts(self) -> list[str]:
        return [self.precision] if self.precision else []


def export_encoder(config: ExportXlaConfig, artifact: TorchModel, ctx: BuildContext, out_dir: Path) -> StableHLOModel:
    import numpy as np
    import torch

    _require_jax()
    xla = ctx.target.xla_options()
    precision = config.precision or "fp32"
    model = ctx.torch_module(artifact.path)
    graph = task_graph(model, ctx.hf_tokenizer(), ctx.source.task)
    module, expected = graph.wrapper, graph.expected
    if precision == "bf16":
        import copy

        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        module = _FloatOutputs(wrap(bf16, graph.input_names, graph.output_names))
    sample = tuple(graph.sample[n].to(torch.int32) for n in graph.input_names)
    max_length = int(ctx.source.max_length)
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        sequence = torch.export.Dim("sequence", min=2, max=max_length)
        program = torch.export.export(module, sample, dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in sample),))
        specs = lambda b, s: [((b, s), "int32")] * len(sample)  # noqa: E731
        exported, weights, names = jax_function(program, specs, ("b, s", ("b >= 1", "s >= 2", f"s <= {max_length}")),
                                                xla.platforms)
    except ExportError:
        raise
    except Exception as exc:  # torch.export, torchax and jax raise anything; the first line is what matters
        raise ExportError(f"XLA export ({precision}) failed: {first_line(exc)}") from exc

    got = [np.asarray(x, dtype=np.float32) for x in exported.call(weights, *[s.numpy() for s in sample])]
    tolerance = config.tolerance if precision == "fp32" else max(config.tolerance, BF16_TOLERANCE)
    worst = check_against_torch(TaskGraph(graph.model, module, graph.sample, graph.input_names, graph.output_names,
                                          expected, graph.task_outputs), got, tolerance, what="jax.export module")
    axes = {o.name: list(o.axes) for o in graph.task_outputs}
    path = out_dir / MODEL_FILE
    path.write_bytes(exported.serialize())
    save_weights(out_dir / WEIGHTS_FILE, names, weights, graph.input_names, axes, max_length)
    stats = {"max_abs_diff_vs_torch": worst, "precision": precision, **export_facts(exported),
             "weights": len(set(names)), "module_bytes": path.stat().st_size}
    if xla.compile_check:
        stats["tpu_compile_check"] = _compile_check(path, xla, ctx)
    return StableHLOModel(path, tuple(graph.input_names), tuple(graph.output_names), stats=stats)


def _compile_check(path: Path, xla, ctx: BuildContext) -> dict:
    """The target's compile-only TPU check when libtpu is installed; a note saying it was skipped otherwise."""
    from hfexport.backends._xla import compile_check

    if not compile_check.libtpu_available():
        return {"note": "skipped: libtpu is not installed (pip install 'jax[tpu]' to check TPU compilation)"}
    ctx.progress.info(f"TPU compile check (compile-only) for {', '.join(xla.compile_check)}")
    check = compile_check.tpu_compile_check(path, xla.compile_check, xla.batch_buckets, xla.sequence_buckets)
    ctx.progress.info(compile_check.summary(check))
    return check


def _require_jax() -> None:
    try:
        import jax  # noqa: F401
        import torchax  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"the xla backend needs jax and torchax ({exc}): pip install 'hfexport[xla-build]'") from exc


def jax_function(program, specs, symbols: tuple[str, tuple[str, ...]], platforms):
    """(jax Exported, weights as jax arrays, weight names) from a torch ExportedProgram.

    `specs(*dims)` gives each token/cache argument's (shape, dtype) from the symbolic dimensions, which are
    made in one scope from `symbols` ("b, s" and its constraints).
    """
    import jax
    import torchax
    from torchax.export import exported_program_to_jax

    names, states, func = exported_program_to_jax(program, export_raw=True)
    env = torchax.default_env()
    weights = env.t2j_copy(states)
    names = list(names) + [f"constant.{i}" for i in range(len(names), len(weights))]
    # Tied weights (a masked LM's decoder and its embedding table) are one tensor twice: stored once.
    first: dict[tuple, str] = {}
    names = [first.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                               tuple(t.stride())), name) for name, t in zip(names, states)]

    def fn(weights, *arguments):
        with env:
            return tuple(func(weights, arguments))

    dims = jax.export.symbolic_shape(symbols[0], constraints=symbols[1])
    arguments = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in specs(*dims)]
    weight_specs = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights]
    exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(weight_specs, *arguments)
    return exported, weights, names


def export_facts(exported) -> dict:
    """What a reader needs to know whether its jax can still load the module (jax keeps about 6 months)."""
    import importlib.metadata

    import jax

    return {"jax": jax.__version__, "jaxlib": importlib.metadata.version("jaxlib"),
            "exported": datetime.date.today().isoformat(), "platforms": list(exported.platforms),
            "calling_convention_version": int(exported.calling_convention_version)}


def save_weights(path: Path, names: list[str], weights, inputs, axes: dict, max_sequence: int,
                 generation: dict | None = None) -> None:
    """The weights in call order; the metadata names the order, the inputs and each output's axes."""
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {}
    for name, w in zip(names, weights):
        if name not in tensors:
            tensors[name] = np.asarray(w)
    meta = {"order": names, "inputs": list(inputs), "outputs": axes, "max_sequence": max_sequence,
            **({"generation": generation} if generation else {})}
    save_file(tensors, str(path), metadata={"hfexport": json.dumps(meta)})


class _FloatOutputs:
    """A bf16 model's outputs as fp32, so the artifact's signature does not depend on the precision."""

    def __new__(cls, inner):
        import torch

        class FloatOutputs(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, *tensors):
                return tuple(t.float() for t in self.inner(*tensors))

        return FloatOutputs().eval()
