"""Weight-only int4/int8 for LLM graphs with ONNX Runtime's MatMulNBits quantiser (round to nearest).

Three runs of the quantiser over one graph, because each takes a single bit width: the transformer
blocks at `bits`, then the LM head and the embedding table at their own precision when asked. The LM
head is the MatMul that produces `logits`; the embedding is the Gather over a [vocab, hidden] table.
"""

from __future__ import annotations

from pathlib import Path

from hfexport.errors import ExportError


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
    logits = next(o for o in graph.output if o.name == "logits")
    vocab = logits.type.tensor_type.shape.dim[-1].dim_value
    tables = {init.name for init in graph.initializer if len(init.dims) == 2 and init.dims[0] == vocab}
    return [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in tables]


def quantize_weights_only(source: Path, out: Path, *, bits: int, group_size: int, lm_head_precision: str,
                          embedding_precision: str, accuracy_level: int, exclude_nodes: list[str]) -> dict:
    import logging

    # NOTE: importing the quantiser runs logging.basicConfig(level=INFO), which undoes the build's quiet
    # root logger; its module logger would then print a line for every node it skips.
    chatty = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    saved_level = chatty.level
    chatty.setLevel(logging.ERROR)
    try:
        return _quantize(source, out, bits=bits, group_size=group_size, lm_head_precision=lm_head_precision,
                         embedding_precision=embedding_precision, accuracy_level=accuracy_level,
                         exclude_nodes=exclude_nodes)
    finally:
        chatty.setLevel(saved_level)


def _quantize(source, out, *, bits, group_size, lm_head_precision, embedding_precision, accuracy_level,
              exclude_nodes) -> dict:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(source))
    lm_head = find_lm_head(model.graph)
    embeddings = find_embeddings(model.graph)

    def run(model, nbits, op_type, **nodes):
        quantizer = MatMulNBitsQuantizer(model, bits=nbits, block_size=group_size, is_symmetric=False,
                                         accuracy_level=accuracy_level, op_types_to_quantize=(op_type,),
                                         quant_axes=(("MatMul", 0), ("Gather", 1)), **nodes)
        quantizer.process()
        return quantizer.model.model

    try:
        model = run(model, bits, "MatMul", nodes_to_exclude=[*exclude_nodes, *([lm_head] if lm_head else [])])
        if lm_head and lm_head_precision != "fp32":
            model = run(model, 4 if lm_head_precision == "int4" else 8, "MatMul", nodes_to_include=[lm_head])
        if embeddings and embedding_precision == "int4":
            # NOTE: the quantiser stamps opset 21 on the graph when it quantises a Gather (int4 tensors
            # need it) without converting the ops, which leaves e.g. ReduceMean invalid; convert first.
            model = _to_opset(model, 21)
            model = run(model, 4, "Gather", nodes_to_include=embeddings)
        onnx.save_model(model, str(out), save_as_external_data=model.ByteSize() > 2_000_000_000,
                        location=out.name + ".data")
    except (ExportError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise ExportError(f"weight-only int{bits} quantisation failed: {str(exc).splitlines()[0]}") from exc
    graph = onnx.load(str(out), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    return {"nodes": len(ops), "quantized_nodes": ops.count("MatMulNBits") + ops.count("GatherBlockQuantized"),
            "matmul_nbits": ops.count("MatMulNBits"), "gather_block_quantized": ops.count("GatherBlockQuantized"),
            "bits": bits, "group_size": group_size, "lm_head": lm_head, "lm_head_precision": lm_head_precision,
            "embedding_precision": embedding_precision, "accuracy_level": accuracy_level, "isa": "weight-only",
            "mode": "weights_only"}


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
