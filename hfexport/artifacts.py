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


@dataclass(frozen=True)
class TorchModel(Artifact):
    """A Hugging Face checkpoint folder (config + safetensors + tokenizer) that transformers loads."""

    kind: ClassVar[str] = "torch"

    def files(self) -> list[Path]:
        # Only the weights count toward the size of the model; tokenizer and configs are shared by every stage.
        weights = sorted(self.path.glob("*.safetensors")) + sorted(self.path.glob("*.bin"))
        return weights or super().files()


@dataclass(frozen=True)
class OnnxModel(Artifact):
    """One .onnx file (with an optional `<name>.data` sidecar for weights past 2 GB)."""

    kind: ClassVar[str] = "onnx"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    # Facts a pass found worth recording in the manifest (node counts, fused operators, ...).
    stats: dict = field(default_factory=dict, compare=False)

    def files(self) -> list[Path]:
        sidecar = self.path.with_name(self.path.name + ".data")
        return [self.path, sidecar] if sidecar.exists() else [self.path]


ARTIFACT_KINDS: dict[str, type[Artifact]] = {cls.kind: cls for cls in (TorchModel, OnnxModel)}
