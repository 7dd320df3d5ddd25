"""ONNX graphs whose weights live in external data (models past protobuf's 2 GB), handled without holding a
second copy of the weights in memory (docs/decisions/0183-models-past-2gb.md).

- `gather_external_data`: TorchScript's exporter writes a graph past 2 GB with one file per tensor beside it;
  the bundle, the checksums and the size line know one sidecar, `<graph>.data`. The tensors are copied into it
  one at a time (file to file), never the whole model in memory as `onnx.load` + `onnx.save_model` would.
- `weight_array`: an initializer as numpy, memory-mapped from its external file (pages the kernel can drop)
  or read from the proto when it is inline.
- `load_graph`: the graph without its external weights (`load_external_data=False`): node and initializer
  metadata only, a few MB for any model size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PROTOBUF_LIMIT = 2_000_000_000  # bytes in one protobuf message: a graph past it keeps its weights in external data


def external_info(init) -> dict[str, str] | None:
    """The external_data entries of an initializer (location, offset, length), None when it is inline."""
    from onnx import TensorProto

    if init.data_location != TensorProto.EXTERNAL:
        return None
    return {entry.key: entry.value for entry in init.external_data}


def external_files(path: Path) -> list[Path]:
    """The files the graph at `path` reads its external weights from (each once), found by the runtime's
    protobuf walk: a graph with its weights inline is not parsed whole (onnx.load took 0.6 s on MiniLM)."""
    from hfexport.runtime.paths import external_data_locations

    return [path.parent / name for name in dict.fromkeys(external_data_locations(path))]


def graph_bytes(path: Path) -> int:
    """The graph file plus every external data file it references: what the model takes on disk."""
    return path.stat().st_size + sum(f.stat().st_size for f in external_files(path) if f.is_file())


def gather_external_data(path: Path, *, align: int = 4096) -> bool:
    """Move every external tensor of the graph at `path` into one sidecar `<graph name>.data` (aligned, as
    onnx's own writer does, so a reader can memory-map it); the per-tensor files are removed. True when the
    graph has external data. The graph proto is rewritten (it holds metadata only)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    folder, sidecar_name = path.parent, path.name + ".data"
    tensors = [(init, external_info(init)) for init in model.graph.initializer]
    tensors = [(init, info) for init, info in tensors if info is not None]
    if not tensors:
        return False
    if all(info["location"] == sidecar_name for _, info in tensors):
        return True
    sidecar = folder / (sidecar_name + ".partial")
    sources: set[str] = set()
    with open(sidecar, "wb") as out:
        for init, info in tensors:
            source = folder / info["location"]
            offset, length = int(info.get("offset", 0)), info.get("length")
            position = out.tell()
            if position % align:
                out.write(b"\0" * (align - position % align))
                position = out.tell()
            with open(source, "rb") as handle:
                handle.seek(offset)
                remaining = int(length) if length is not None else os.fstat(handle.fileno()).st_size - offset
                written = 0
                while remaining > 0:
                    chunk = handle.read(min(remaining, 64 << 20))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
                    written += len(chunk)
            del init.external_data[:]
            for key, value in (("location", sidecar_name), ("offset", str(position)), ("length", str(written))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
            sources.add(info["location"])
    onnx.save_model(model, str(path))
    os.replace(sidecar, folder / sidecar_name)
    for name in sources - {sidecar_name}:
        (folder / name).unlink(missing_ok=True)
    return True


def weight_array(init, folder: Path) -> np.ndarray:
    """An initializer's values: memory-mapped (read-only) from its external file, else from the proto."""
    from onnx import helper, numpy_helper

    info = external_info(init)
    if info is None:
        return numpy_helper.to_array(init)
    dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    shape = tuple(int(d) for d in init.dims)
    count = int(np.prod(shape)) if shape else 1
    return np.memmap(folder / info["location"], dtype=dtype, mode="r", offset=int(info.get("offset", 0)),
                     shape=(count,)).reshape(shape)


def load_graph(path: Path):
    """The ModelProto without its external weights (inline initializers stay)."""
    import onnx

    return onnx.load(str(path), load_external_data=False)
