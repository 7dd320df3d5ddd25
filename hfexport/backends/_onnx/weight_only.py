"""Weight-only int4/int8 for LLM graphs with ONNX Runtime's MatMulNBits quantiser (round to nearest).

Every weight matrix gets a precision first (`plan_precisions`): the transformer blocks' MatMuls at `bits`,
the LM head (the MatMul that produces `logits`) and the embedding table (the Gather over a [vocab, hidden]
table) at their own. With a `search` (int4_top1_target), the matrices planned in int4 go through the
sensitivity search of `int4_search.py`, and the ones it does not keep in int4 become int8.

The quantiser takes one bit width per run, so it runs once per bit width, each run told which nodes are its
own and which are not: it otherwise takes every MatMul (or Gather) it sees, `nodes_to_include` only adds to
that. int8 embeddings are written here: the quantiser's Gather path writes int4 only, while ONNX Runtime's
GatherBlockQuantized also reads uint8 (bits 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hfexport.backends._onnx.blocks import WeightMatrix, quantize_rows_uint8
from hfexport.backends._onnx.external import PROTOBUF_LIMIT, external_info, load_graph
from hfexport.backends._onnx.int4_search import SearchSettings, search_int4
from hfexport.errors import ExportError, first_line

Precision = Literal["fp32", "int8", "int4"]


@dataclass(frozen=True)
class WeightOnlySettings:
    """What the MatMulNBits quantiser is told, defaults applied (`int4_top1_target`: the search's target)."""

    precision: Literal["int8", "int4"]
    group_size: Literal[32, 64, 128]
    lm_head_precision: Precision
    embedding_precision: Precision
    accuracy_level: Literal[0, 1, 2, 3, 4]
    exclude_nodes: tuple[str, ...] = ()
    int4_top1_target: float | None = None
    symmetric_weights: bool = False  # MatMul blocks without zero points (the embedding table stays asymmetric)

    @property
    def bits(self) -> int:
        return 4 if self.precision == "int4" else 8

    def describe(self) -> str:
        split = f", int8 where top-1 < {self.int4_top1_target:g}" if self.int4_top1_target is not None else ""
        kind = ", symmetric" if self.symmetric_weights else ""
        return f"quantize({self.precision}, weights only{kind}, group {self.group_size}{split})"


def _producer(graph, name: str):
    return next((n for n in graph.node if name in n.output), None)


def find_lm_head(graph) -> str | None:
    """The MatMul feeding the `logits` output (through a bias Add or a Cast, if any)."""
    node = _producer(graph, "logits")
    for _ in range(3):
        if node is None or node.op_type == "MatMul":
            break
        node = next((p for p in (_producer(graph, i) for i in node.input) if p is not None), None)
    return node.name if node is not None and node.op_type == "MatMul" else None


def find_embeddings(graph) -> list[str]:
    """Gathers over a [vocab, hidden] table: the token embedding (not GPT-2's [positions, hidden] one)."""
    logits = next((o for o in graph.output if o.name == "logits"), None)
    if logits is None:  # an encoder's hidden states: no vocabulary to size the table by
        return []
    vocab = logits.type.tensor_type.shape.dim[-1].dim_value
    tables = {init.name for init in graph.initializer if len(init.dims) == 2 and init.dims[0] == vocab}
    return [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in tables]


def weight_matrices(graph, exclude_nodes: list[str] = ()) -> list[WeightMatrix]:
    """The float weights the weight-only quantiser can take, in graph order, minus `exclude_nodes`."""
    from onnx import TensorProto

    floats = {init.name: init for init in graph.initializer
              if init.data_type == TensorProto.FLOAT and len(init.dims) >= 2}
    lm_head, embeddings = find_lm_head(graph), set(find_embeddings(graph))
    found = []
    for node in graph.node:
        if node.name in exclude_nodes:
            continue
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in floats:
            init = floats[node.input[1]]
            if all(d == 1 for d in init.dims[:-2]):  # what MatMulNBits takes: 2-D, or N-D with unit leading dims
                found.append(WeightMatrix(node.name, init.name, "MatMul", "lm_head" if node.name == lm_head else "block",
                                          int(np.prod(init.dims))))
        elif node.name in embeddings:
            init = floats[node.input[0]]
            found.append(WeightMatrix(node.name, init.name, "Gather", "embedding", int(np.prod(init.dims))))
    return found


def plan_precisions(matrices: list[WeightMatrix], *, bits: int, lm_head_precision: str,
                    embedding_precision: str) -> dict[str, str]:
    """node -> "int4" | "int8" | "fp32", before any search."""
    wanted = {"block": f"int{bits}", "lm_head": lm_head_precision, "embedding": embedding_precision}
    return {m.node: wanted[m.role] for m in matrices}


def quantize_weights_only(source: Path, out: Path, *, bits: int, group_size: int, lm_head_precision: str,
                          embedding_precision: str, accuracy_level: int, exclude_nodes: list[str],
                          search: SearchSettings | None = None, symmetric: bool = False) -> dict:
    """`search`: the int4 search's calibration windows and top-1 target, or None for no search."""
    import logging

    # NOTE: importing the quantiser runs logging.basicConfig(level=INFO), which undoes the build's quiet
    # root logger; its module logger would then print a line for every node it skips.
    chatty = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    saved_level = chatty.level
    chatty.setLevel(logging.ERROR)
    try:
        return _quantize(source, out, bits=bits, group_size=group_size, lm_head_precision=lm_head_precision,
                         embedding_precision=embedding_precision, accuracy_level=accuracy_level,
                         exclude_nodes=exclude_nodes, search=search, symmetric=symmetric)
    finally:
        chatty.setLevel(saved_level)


def _quantize(source, out, *, bits, group_size, lm_head_precision, embedding_precision, accuracy_level,
              exclude_nodes, search, symmetric) -> dict:
    import gc

    import onnx

    # The graph first, its external weights (a model past 2 GB) left on disk: the search memory-maps them, and
    # only the quantiser below, after the search has let go of everything, reads them all.
    model = load_graph(source)
    external = any(external_info(init) is not None for init in model.graph.initializer)
    _name_nodes(model.graph)
    lm_head = find_lm_head(model.graph)
    matrices = weight_matrices(model.graph, exclude_nodes)
    precisions = plan_precisions(matrices, bits=bits, lm_head_precision=lm_head_precision,
                                 embedding_precision=embedding_precision)
    found = None
    if search is not None:
        candidates = [m for m in matrices if precisions[m.node] == "int4"]
        found = search_int4(model, candidates, search, group_size=group_size, folder=source.parent,
                            symmetric=symmetric)
        precisions.update({node: "int8" for node in found.int8})
        gc.collect()
    try:
        if external:  # the quantiser reads weights from the proto (numpy_helper.to_array without a folder)
            model = onnx.load(str(source))
            _name_nodes(model.graph)  # the same names: unnamed nodes are named by position
        model = _apply(model, matrices, precisions, group_size=group_size, accuracy_level=accuracy_level,
                       symmetric=symmetric)
        onnx.save_model(model, str(out), save_as_external_data=model.ByteSize() > PROTOBUF_LIMIT,
                        all_tensors_to_one_file=True, location=out.name + ".data")
        del model
        gc.collect()
    except (ExportError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise ExportError(f"weight-only int{bits} quantisation failed: {first_line(exc)}") from exc
    graph = onnx.load(str(out), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    by_role = {role: sorted({precisions[m.node] for m in matrices if m.role == role}) for role in
               ("lm_head", "embedding")}
    quantized = [m for m in matrices if precisions[m.node] != "fp32"]
    int4_params = sum(m.params for m in quantized if precisions[m.node] == "int4")
    stats = {"nodes": len(ops), "quantized_nodes": ops.count("MatMulNBits") + ops.count("GatherBlockQuantized"),
             "matmul_nbits": ops.count("MatMulNBits"), "gather_block_quantized": ops.count("GatherBlockQuantized"),
             "bits": bits, "group_size": group_size, "lm_head": lm_head,
             "lm_head_precision": "/".join(by_role["lm_head"]) or lm_head_precision,
             "embedding_precision": "/".join(by_role["embedding"]) or embedding_precision,
             "int4_matrices": sum(precisions[m.node] == "int4" for m in quantized),
             "int8_matrices": sum(precisions[m.node] == "int8" for m in quantized),
             "int4_weight_share": round(int4_params / max(sum(m.params for m in quantized), 1), 4),
             "accuracy_level": accuracy_level, "symmetric_weights": symmetric, "isa": "weight-only",
             "mode": "weights_only"}
    if found is not None:
        stats.update(found.stats())
    return stats


def _name_nodes(graph) -> None:
    """The quantiser addresses nodes by name; give the (rare) unnamed ones a unique one."""
    taken = {n.name for n in graph.node}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _apply(model, matrices, precisions, *, group_size, accuracy_level, symmetric=False):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    def run(model, nbits, op_type, nodes):
        others = [n.name for n in model.graph.node if n.op_type == op_type and n.name not in nodes]
        quantizer = MatMulNBitsQuantizer(model, bits=nbits, block_size=group_size,
                                         is_symmetric=symmetric and op_type == "MatMul",
                                         accuracy_level=accuracy_level, op_types_to_quantize=(op_type,),
                                         quant_axes=(("MatMul", 0), ("Gather", 1)), nodes_to_include=nodes,
                                         nodes_to_exclude=others)
        quantizer.process()
        return quantizer.model.model

    for precision in ("int4", "int8"):
        nodes = [m.node for m in matrices if m.op == "MatMul" and precisions[m.node] == precision]
        if nodes:
            model = run(model, int(precision[3:]), "MatMul", nodes)
    gathers = {p: [m for m in matrices if m.op == "Gather" and precisions[m.node] == p] for p in ("int4", "int8")}
    for matrix in gathers["int8"]:
        _gather_int8(model, matrix, group_size)
    if gathers["int4"]:
        # NOTE: the quantiser stamps opset 21 on the graph when it quantises a Gather (int4 tensors
        # need it) without converting the ops, which leaves e.g. ReduceMean invalid; convert first.
        model = _to_opset(model, 21)
        model = run(model, 4, "Gather", [m.node for m in gathers["int4"]])
    return model


def _gather_int8(model, matrix: WeightMatrix, group_size: int) -> None:
    """Replace the embedding Gather by GatherBlockQuantized over a uint8 table (in place)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    init = next(i for i in graph.initializer if i.name == matrix.weight)
    codes, scales, zero_points = quantize_rows_uint8(numpy_helper.to_array(init), group_size)
    index = next(i for i, n in enumerate(graph.node) if n.name == matrix.node)
    node = graph.node[index]
    names = (f"{init.name}_Q8", f"{init.name}_scales", f"{init.name}_zero_points")
    graph.initializer.extend([numpy_helper.from_array(a, n) for a, n in zip((codes, scales, zero_points), names)])
    replacement = helper.make_node("GatherBlockQuantized", [names[0], node.input[1], names[1], names[2]],
                                   list(node.output), name=node.name + "_Q8", domain="com.microsoft", bits=8,
                                   block_size=group_size, gather_axis=0, quantize_axis=1)
    graph.node.remove(node)
    graph.node.insert(index, replacement)
    if not any(init.name in n.input for n in graph.node):
        graph.initializer.remove(init)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _to_opset(model, version: int):
    import onnx
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), version)
    if current >= version:
        return model
    converted = version_converter.convert_version(model, version)
    if converted.ir_version < 10:
        converted.ir_version = 10
    onnx.checker.check_model(converted, full_check=False)
    return converted
