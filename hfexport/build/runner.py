"""The pass runner (the PassManager): a plan's passes in order over one artifact, with stage folders,
timing, progress lines, the manifest's pass records, an error that names the pass that failed and the
ones before it, and the stage cache (a pass whose inputs were built before is reused, not rerun)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hfexport.artifacts import Artifact
from hfexport.build.cache import StageCache, texts_digest
from hfexport.context import BuildContext
from hfexport.errors import PlanError
from hfexport.passes.base import Pass


@dataclass(frozen=True)
class Stage:
    name: str
    artifact: Artifact
    seconds: float  # this build's time for the pass: near zero when it was reused
    record: dict  # the manifest's pass record: name, params, seconds, size_bytes, stats, cached


class PassRunner:
    def __init__(self, steps: Sequence[Pass], ctx: BuildContext, cache: StageCache | None = None):
        self.steps, self.ctx, self.cache = tuple(steps), ctx, cache

    def run(self, artifact: Artifact) -> list[Stage]:
        ctx, progress = self.ctx, self.ctx.progress
        key = self.cache.source_key(ctx) if self.cache else None
        data = {"calibration_texts": texts_digest(ctx.calibration_texts),
                "train_texts": texts_digest(ctx.train_texts)} if self.cache else {}
        stages: list[Stage] = []
        launched = _launched_processes()
        if launched > 1 and not any(step.trains for step in self.steps):
            raise PlanError(f"launched as {launched} processes (torchrun / accelerate launch), but the recipe has no "
                            "training pass to share: run hfexport build as one process")
        for index, step in enumerate(self.steps):
            key = self.cache.stage_key(key, step, data) if key else None
            progress.start(step.name, step.describe(), index + 1, len(self.steps))
            started = time.perf_counter()
            # Under a launcher every process trains (rank 0 alone goes on from there): a cached training stage
            # would send them all on to export and write the same bundle.
            hit = self.cache.lookup(key) if key and not (step.trains and launched > 1) else None
            if hit:
                artifact = hit[0]
            else:
                opened = len(ctx.stage_dirs)
                try:
                    artifact = step.run(artifact, ctx)
                except Exception as exc:
                    named = _named(exc, _where(index, step, stages))
                    if named is exc:
                        raise
                    raise named from exc
            seconds = time.perf_counter() - started
            if key and not hit:
                self._store(key, step.name, artifact, ctx.stage_dirs[opened:], seconds)
            stats, size = getattr(artifact, "stats", {}), artifact.size_bytes()
            line = "; ".join([f"{size / 1e6:.1f} MB", *step.stats_parts(stats)])
            progress.done(step.name, line + (" (reused from the stage cache)" if hit else ""), stats=stats,
                          cached=bool(hit))
            record = {"name": step.name, "params": step.config.model_dump(mode="json"),
                      "seconds": round(seconds, 3), "size_bytes": size, "stats": stats, "cached": bool(hit)}
            stages.append(Stage(step.name, artifact, seconds, record))
        return stages

    def _store(self, key: str, name: str, artifact: Artifact, opened: list[Path], seconds: float) -> None:
        # One stage folder holding the whole artifact is what can be stored; anything else runs every time.
        if not self.cache.writable or len(opened) != 1:
            return
        try:
            if not self.cache.store(key, name, artifact, opened[0], seconds):
                self.ctx.progress.info(f"stage cache: {name}'s output is not stored (its artifact or stats do not "
                                       f"round-trip through JSON); it reruns in every build")
        except OSError as exc:
            self.cache.writable = False
            self.ctx.progress.info(f"stage cache: cannot write to {self.cache.folder} ({exc.strerror or exc}); "
                                   f"continuing without it")


def _where(index: int, step: Pass, before: list[Stage]) -> str:
    after = f" after {', '.join(stage.name for stage in before)}" if before else ""
    return f"passes.{index} ({step.name}) failed{after}"


def _named(exc: Exception, where: str) -> Exception:
    """The same error, its message prefixed with where it happened. An exception whose message is not its
    single string argument (OSError, KeyError, ...) keeps its message and gets the place as a note."""
    if type(exc).__str__ is BaseException.__str__ and len(exc.args) == 1 and isinstance(exc.args[0], str):
        try:
            named = copy.copy(exc)
        except Exception:  # an exception class whose constructor copy cannot call
            named = None
        if named is not None and type(named) is type(exc):
            named.args = (f"{where}: {exc.args[0]}",)
            return named
    exc.add_note(where)
    return exc


def _launched_processes() -> int:
    """The process count a launcher (torchrun, accelerate launch) started this build as; 1 when none."""
    import os

    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1
