"""Distillation on many processes: DDP under `torchrun` / `accelerate launch`, micro-batches, checkpoints.

A launcher starts N copies of `hfexport build`, each with RANK / WORLD_SIZE / LOCAL_RANK in its environment.
Every rank runs the build up to and through the distill pass (the passes before it are deterministic, so each
rank holds the same student); the student is wrapped in DistributedDataParallel, each global batch of
`batch_size` texts is split into `world x gradient_accumulation` micro-batches (rank r takes its share), and
DDP averages the gradients, so the optimiser sees the gradient of the whole global batch, as in one process.
Rank 0 alone writes the stage and goes on to export, validate and write the bundle; the other ranks stop
after training. The teacher is replicated on every rank (FSDP for students that do not fit one device is
not built: docs/decisions/0182-distributed-distillation.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from hfexport.errors import PlanError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shares(self, texts: list[str], accumulation: int) -> list[list[str]]:
        """This rank's micro-batches of one global batch: `size x accumulation` near-equal slices in order."""
        parts = self.size * accumulation
        bounds = [len(texts) * i // parts for i in range(parts + 1)]
        slices = [texts[bounds[i]:bounds[i + 1]] for i in range(parts)]
        return slices[self.rank * accumulation:(self.rank + 1) * accumulation]

    def wrap(self, student, device):
        """The student as the training loop calls it: DDP across the ranks, or itself in one process."""
        if not self.distributed:
            return student
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index or 0] if device.type == "cuda" else None
        # NOTE: a pruned student, or a frozen embedding table, leaves parameters without a gradient.
        return DistributedDataParallel(student, device_ids=ids, find_unused_parameters=True)

    def no_sync(self, model, last: bool):
        """Skip the gradient all-reduce on every micro-batch but the last of a step."""
        return model.no_sync() if self.distributed and not last else nullcontext()

    def mean(self, value: float) -> float:
        """A scalar averaged over the ranks (the logged loss of a global batch)."""
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item() / self.size)

    def finish(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def world_from_env(device) -> World:
    """The launcher's world, with the process group started (gloo on CPUs, nccl on GPUs); one process if none."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world


def check_batch(batch_size: int, world: World, accumulation: int) -> None:
    if batch_size < world.size * accumulation:
        raise PlanError(f"distill batch_size {batch_size} is the global batch: it needs at least one text per "
                        f"process and micro-batch ({world.size} x {accumulation}); raise batch_size")


class Checkpoints:
    """The student, optimiser, schedule, position and RNG state every `every` steps, for a killed run to resume.

    Written by rank 0 only, with torch.save, and read back with `weights_only=True` (tensors and plain
    values only: loading a checkpoint cannot run code). A checkpoint belongs to one training: its key is the
    distill settings and the training texts; another training's checkpoint is ignored.
    """

    def __init__(self, folder: str | None, every: int, cfg, texts: list[str], world: World):
        self.folder = Path(folder).expanduser() if folder else None
        self.every, self.world = every, world
        settings = cfg.model_dump(mode="json", exclude={"checkpoint_dir", "checkpoint_every"})
        digest = hashlib.sha256(json.dumps([settings, texts], sort_keys=True).encode()).hexdigest()[:16]
        self.path = self.folder / f"distill-{digest}.pt" if self.folder else None

    def due(self, step: int) -> bool:
        return self.path is not None and self.every > 0 and step % self.every == 0

    def save(self, state: dict) -> None:
        if self.path is None or not self.world.main:
            return
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        torch.save(state, partial)
        partial.replace(self.path)  # atomic: a kill while writing leaves the previous checkpoint whole

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        import torch

        return torch.load(self.path, map_location="cpu", weights_only=True)

    def clear(self) -> None:
        if self.path is not None and self.world.main:
            self.path.unlink(missing_ok=True)
