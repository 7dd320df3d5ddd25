"""Typed values for each stage of a build. Each knows its files; passes turn one into the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class Artifact:
    kind: ClassVar[str] = "artifact"
    path: Path

    def files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.rglob("*") if p.is_file())
        return [self.path]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def bundle_files(self) -> dict[str, Path]:
        """Bundle file name -> source file, for a deployable artifact; the first entry is the model file."""
        raise NotImplementedError(f"a {self.kind} model is not a deployable artifact")

    def signature(self) -> dict:
        """{"inputs": [...], "outputs": [...]}, each with name, dtype and shape (symbolic dims as names)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TorchModel(Artifact):
    """A Hugging Face checkpoint folder (config + safetensors + tokenizer) that transformers loads."""

    kind: ClassVar[str] = "torch"
    # Facts a pass found worth recording in the manifest (kept layers, sparsity, distillation losses, ...).
    stats: dict = field(default_factory=dict, compare=False)

    def files(self) -> list[Path]:
        # Only the weights count toward the size of the model; tokenizer and configs are shared by every stage.
        weights = sorted(self.path.glob("*.safetensors")) + sorted(self.path.glob("*.bin"))
        return weights or super().files()


@dataclass(frozen=True)
class OnnxModel(Artifact):
    """One .onnx file (with an optional `<name>.data` sidecar for weights past 2 GB), or an encoder-decoder's
    graphs: `path` the encoder, `parts` the names of the other graphs beside it (see `graphs`)."""

    kind: ClassVar[str] = "onnx"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    # Facts a pass found worth recording in the manifest (node counts, fused operators, ...).
    stats: dict = field(default_factory=dict, compare=False)
    # Further graph files in `path`'s folder (an encoder-decoder's decoder), by name; empty for one graph.
    parts: tuple[str, ...] = ()

    def graphs(self) -> list[Path]:
        """Every graph file, `path` first."""
        return [self.path, *(self.path.with_name(name) for name in self.parts)]

    def files(self) -> list[Path]:
        files = []
        for graph in self.graphs():
            sidecar = graph.with_name(graph.name + ".data")
            files += [graph, sidecar] if sidecar.exists() else [graph]
        return files

    def bundle_files(self) -> dict[str, Path]:
        if self.parts:  # several graphs keep their names; the first is the one the manifest's model_file names
            return {graph.name: graph for graph in self.graphs()}
        names = {"model.onnx": self.path}
        sidecar = self.path.with_name(self.path.name + ".data")
        if sidecar.exists():
            # NOTE: the graph refers to its weights file by name, so the sidecar keeps its original name.
            names[sidecar.name] = sidecar
        return names

    def signature(self) -> dict:
        import onnx

        def describe(values, prefix):
            return [{"name": prefix + v.name,
                     "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                     "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
                    for v in values]

        return _joined(self, lambda path: onnx.load(str(path), load_external_data=False).graph,
                       lambda graph, prefix: (describe(graph.input, prefix), describe(graph.output, prefix)))


def _joined(artifact, read, describe) -> dict:
    """The signature of every graph: the first one's ports by name, the others' as `<file name>/<port>`."""
    signature = {"inputs": [], "outputs": []}
    for index, path in enumerate(artifact.graphs()):
        inputs, outputs = describe(read(path), "" if index == 0 else f"{path.name}/")
        signature["inputs"] += inputs
        signature["outputs"] += outputs
    return signature


@dataclass(frozen=True)
class OpenVINOModel(Artifact):
    """OpenVINO IR: `path` is the .xml graph; its weights are the .bin file of the same name beside it. An
    encoder-decoder's further graphs (.xml names, each with its .bin) are `parts`, beside `path`."""

    kind: ClassVar[str] = "openvino"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    stats: dict = field(default_factory=dict, compare=False)
    parts: tuple[str, ...] = ()

    @property
    def weights(self) -> Path:
        return self.path.with_suffix(".bin")

    def graphs(self) -> list[Path]:
        return [self.path, *(self.path.with_name(name) for name in self.parts)]

    def files(self) -> list[Path]:
        return [f for graph in self.graphs() for f in (graph, graph.with_suffix(".bin"))]

    def bundle_files(self) -> dict[str, Path]:
        if self.parts:  # several graphs keep their names (each .bin follows its .xml)
            return {f.name: f for f in self.files()}
        # OpenVINO finds the weights as <graph stem>.bin, so both files are renamed together.
        return {"model.xml": self.path, "model.bin": self.weights}

    def signature(self) -> dict:
        import openvino

        def describe(model, prefix):
            # IR keeps no names for dynamic dimensions; ours are always (batch, sequence, ...).
            def ports(items):
                return [{"name": prefix + port.get_any_name(), "dtype": port.get_element_type().to_dtype().name,
                         "shape": [_DIM_NAMES[i] if dim.is_dynamic and i < len(_DIM_NAMES) else
                                   ("?" if dim.is_dynamic else dim.get_length())
                                   for i, dim in enumerate(port.get_partial_shape())]}
                        for port in items]

            return ports(model.inputs), ports(model.outputs)

        return _joined(self, lambda path: openvino.Core().read_model(str(path)), describe)


_DIM_NAMES = ("batch", "sequence")


@dataclass(frozen=True)
class StableHLOModel(Artifact):
    """A serialized jax.export module (`path`, StableHLO inside) and its weights, `weights.safetensors` beside
    it, passed as arguments on each call; the weights file's metadata names their order and the inputs."""

    kind: ClassVar[str] = "stablehlo"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    stats: dict = field(default_factory=dict, compare=False)

    @property
    def weights(self) -> Path:
        return self.path.with_name("weights.safetensors")

    def files(self) -> list[Path]:
        return [self.path, self.weights]

    def bundle_files(self) -> dict[str, Path]:
        return {"model.jax": self.path, "weights.safetensors": self.weights}

    def signature(self) -> dict:
        import jax

        exported = jax.export.deserialize(bytearray(self.path.read_bytes()))
        names = {"b": "batch", "s": "sequence", "t": "sequence"}

        def describe(names_, avals):
            return [{"name": name, "dtype": str(aval.dtype),
                     "shape": [names.get(str(d), str(d)) if not isinstance(d, int) else d for d in aval.shape]}
                    for name, aval in zip(names_, avals)]

        tokens = exported.in_avals[-len(self.inputs):] if self.inputs else ()
        return {"inputs": describe(self.inputs, tokens), "outputs": describe(self.outputs, exported.out_avals)}


ARTIFACT_KINDS: dict[str, type[Artifact]] = {cls.kind: cls for cls in (TorchModel, OnnxModel, OpenVINOModel,
                                                                        StableHLOModel)}
