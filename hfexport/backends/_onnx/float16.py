"""fp16 conversion of an ONNX graph for GPU targets (ONNX Runtime's float16 converter).

Runs after the fusions, as ONNX Runtime's own GPU recipe does: the converter needs the fused contrib
ops' types, which its symbolic shape inference knows and ONNX's does not. Graph inputs and outputs
stay fp32 (a Cast at each edge), so the runtime and its callers feed and read the same arrays as for an
fp32 bundle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hfexport.backends._onnx.external import PROTOBUF_LIMIT
from hfexport.errors import ExportError, first_line


@dataclass(frozen=True)
class Float16Settings:
    """fp16 takes no quantiser options: only the nodes kept in fp32."""

    exclude_nodes: tuple[str, ...] = ()
    precision: Literal["fp16"] = "fp16"

    def describe(self) -> str:
        return "quantize(fp16)"


def convert_float16(source: Path, out: Path, keep_nodes: list[str] | tuple[str, ...] = ()) -> dict:
    import onnx
    from onnx import TensorProto
    from onnxruntime.transformers.onnx_model import OnnxModel as OrtModel

    model = onnx.load(str(source))
    unknown = set(keep_nodes) - {node.name for node in model.graph.node}
    if unknown:
        raise ExportError(f"exclude_nodes names nodes the graph does not have: {', '.join(sorted(unknown))}")
    before = Counter(init.data_type for init in model.graph.initializer)
    casts_before = sum(node.op_type == "Cast" for node in model.graph.node)
    wrapped = OrtModel(model)
    try:
        wrapped.convert_float_to_float16(keep_io_types=True, node_block_list=list(keep_nodes) or None)
    except Exception as exc:  # the converter raises bare asserts and ValueErrors from deep inside
        raise ExportError(f"fp16 conversion failed: {first_line(exc)}"
                          ) from exc
    converted = wrapped.model
    out.parent.mkdir(parents=True, exist_ok=True)
    large = converted.ByteSize() > PROTOBUF_LIMIT
    onnx.save_model(converted, str(out), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=out.name + ".data" if large else None)
    after = Counter(init.data_type for init in converted.graph.initializer)
    return {
        "precision": "fp16",
        "float_initializers": before[TensorProto.FLOAT],
        "fp16_initializers": after[TensorProto.FLOAT16],
        "fp32_initializers_kept": after[TensorProto.FLOAT],
        "casts_added": sum(node.op_type == "Cast" for node in converted.graph.node) - casts_before,
        "nodes_kept_fp32": len(keep_nodes),
    }
