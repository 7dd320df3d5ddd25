"""The distill pass: its config, and the run that sets up teacher, student and texts for the trainer."""

from __future__ import annotations

import copy
import random
from contextlib import nullcontext
from typing import Literal

from pydantic import Field

from hfexport.artifacts import TorchModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes._checkpoint import read_history, save_checkpoint
from hfexport.passes.base import Pass, PassConfig
from hfexport.passes.distill.distributed import world_from_env
from hfexport.passes.distill.losses import DistillLoss
from hfexport.passes.distill.selection import diverse
from hfexport.passes.distill.trainer import train
from hfexport.progress import Progress
from hfexport.tasks import get_task


class DistillConfig(PassConfig):
    epochs: int = Field(8, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    temperature: float = Field(2.0, gt=0, description="softmax temperature for logit KL")
    hidden_weight: float = Field(1.0, ge=0, description="weight of the hidden-state loss (0 = off)")
    # Which teacher hidden state student layer i is trained to reproduce when layers were dropped.
    # "span": the state the next kept teacher layer reads (student layer i stands in for the whole span of
    # teacher layers up to the next kept one; the last student layer for the rest, so it targets the
    # teacher's final output). "copied": the output of the teacher layer it was copied from.
    hidden_map: Literal["span", "copied"] = "span"
    # MiniLMv2's objective: the student's last attention layer reproduces the teacher's last layer's
    # query-query, key-key and value-value relations (scaled dot products, softmax over keys, KL per
    # relation head). It constrains how tokens relate, which a pooled-output loss says nothing about.
    relation_weight: float = Field(0.0, ge=0, description="weight of the attention-relation loss (0 = off)")
    relation_heads: int | None = Field(None, ge=1, description="relation heads (default: the teacher's heads)")
    # The token embedding table is most of a small student's weights, and a few thousand sentences update
    # only the rows of the words they contain: the layers then drift away from every word not seen.
    train_embeddings: bool = Field(True, description="train the token embedding table too")
    max_length: int = Field(128, ge=8, description="training sequence length cap")
    max_texts: int = Field(5000, ge=16, description="training texts used at most")
    # When --train-data holds more than max_texts: "first" takes the first ones; "diverse" embeds them all with
    # the teacher and keeps the text nearest each of max_texts k-means centres, so the budget covers the
    # pool's whole range.
    # NOTE: what it bought and cost on MiniLM (docs/decisions/0020-diverse-distillation-texts.md).
    select: Literal["first", "diverse"] = Field("first", description="which texts when there are more than max_texts")
    holdout: float = Field(0.1, gt=0, lt=0.5, description="share of training texts held out for early stopping")
    eval_every: int = Field(50, ge=1, description="steps between held-out checks")
    patience: int = Field(4, ge=1, description="held-out checks without improvement before stopping")
    # Data augmentation (as TinyBERT did for small training sets): the teacher labels any text, so each
    # epoch after the first replaces this share of batches with edited copies of their texts (a random
    # crop, two texts joined, words dropped, or words swapped for others from the training text). Those
    # batches need a fresh teacher forward (their targets cannot be cached), so steps cost more.
    augment: float = Field(0.0, ge=0, le=1, description="share of batches replaced by augmented copies")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast (weights and optimiser stay fp32). "auto": on a CUDA GPU, and on a CPU with native bf16
    # arithmetic (AVX512-BF16 or AMX).
    # NOTE: why auto picks bf16 there (docs/decisions/0021-bf16-autocast-for-distillation.md).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    # The teacher's targets are computed once per batch and reused every epoch (batches keep their texts,
    # grouped by length; only their order is shuffled). Targets are kept in fp16 up to this many MB, else
    # recomputed each time.
    # NOTE: why the cache (docs/decisions/0022-teacher-target-cache.md).
    teacher_cache_mb: int = Field(2048, ge=0, description="memory for cached teacher targets (0 = off)")
    # Many processes (`torchrun` / `accelerate launch`): batch_size is the global batch, split over the processes
    # and this many micro-batches each (docs/decisions/0182-distributed-distillation.md).
    gradient_accumulation: int = Field(1, ge=1, description="micro-batches per optimiser step and process")
    checkpoint_dir: str | None = Field(None, description="folder for resume points; a killed run resumes from it")
    checkpoint_every: int = Field(50, ge=1, description="optimiser steps between resume points")


class DistillPass(Pass[DistillConfig]):
    name = "distill"
    summary = "train the (pruned) model to match the original on unlabelled text"
    consumes = TorchModel
    produces = TorchModel
    config_class = DistillConfig
    trains = True

    def describe(self) -> str:
        return f"distill({self.config.epochs} epochs, lr {self.config.learning_rate})"

    def stats_parts(self, stats: dict) -> list[str]:
        if "held_out_after" not in stats:
            return []
        return [f"held-out {stats['held_out_metric']} {stats['held_out_before']:.4f} -> "
                f"{stats['held_out_after']:.4f} in {stats['steps']} steps"]

    def check(self, plan: PlanContext) -> None:
        if get_task(plan.source.task).distill_kind not in ("embedding", "logits"):
            raise PlanError(f"distillation has no loss for task {plan.source.task!r}")
        if self.config.device == "cuda":
            try:
                import torch

                if not torch.cuda.is_available():
                    raise PlanError("device: cuda was asked for, but this host has no CUDA GPU")
            except ImportError as exc:
                raise PlanError("distillation needs torch (pip install 'hfexport[build]')") from exc

    def run(self, artifact: TorchModel, ctx: BuildContext) -> TorchModel:
        import torch

        cfg = self.config
        _seed(cfg.seed)
        device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        world = world_from_env(device)
        if device.type == "cuda" and world.distributed:
            device = torch.device("cuda", world.local_rank)
        progress = ctx.progress if world.main else Progress("quiet")
        teacher = ctx.torch_module(ctx.source.local_dir).to(device).eval()
        student = copy.deepcopy(ctx.torch_module(artifact.path)).to(device).train()
        precision = _precision(cfg.precision, device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        mapping = layer_map(artifact)
        loss_fn = DistillLoss(ctx, cfg, mapping, teacher.config)
        texts = list(ctx.train_texts or ctx.calibration_texts)
        if len(texts) > cfg.max_texts and cfg.select == "diverse":
            texts = diverse(texts, cfg.max_texts, teacher, loss_fn, device, cfg.seed, ctx.progress, autocast)
        texts = texts[: cfg.max_texts]
        random.Random(cfg.seed).shuffle(texts)
        n_hold = max(8, int(len(texts) * cfg.holdout))
        held, train_texts = texts[:n_hold], texts[n_hold:]
        if len(train_texts) < cfg.batch_size:
            raise PlanError(f"distillation needs at least {cfg.batch_size + n_hold} texts, got {len(texts)}; "
                            "pass more with --train-data")
        result = train(student, teacher, loss_fn, train_texts, held, cfg, device, autocast, precision, progress, world)
        if not world.main:  # rank 0 alone writes the stage, exports, validates and writes the bundle
            world.finish()
            print(f"rank {world.rank}: distillation done; rank 0 writes the student and the bundle", flush=True)
            raise SystemExit(0)
        student = student.to("cpu").eval()
        teacher.to("cpu")  # frees the GPU; validation puts the shared reference model where it measures
        stats = {"device": str(device), "precision": precision, "steps": result.steps,
                 "train_texts": len(train_texts), "held_out_texts": len(held),
                 "teacher_cached_batches": result.cached_batches,
                 "held_out_before": round(result.before, 5), "held_out_after": round(result.best, 5),
                 "held_out_metric": loss_fn.metric, "layer_map": mapping, "history": result.history}
        if world.distributed:
            stats["processes"] = world.size
        out = ctx.stage_dir(self.name)
        save_checkpoint(student, artifact.path, out, ctx, {"distill": {k: v for k, v in stats.items()
                                                                       if k != "history"}})
        world.finish()
        return TorchModel(out, stats=stats)


def layer_map(artifact: TorchModel) -> list[int] | None:
    """Student layer i -> teacher layer, from the pruning records when layers were dropped.

    Prunes compose: a second prune's `kept_layers` index the first one's survivors, so a chain of
    prune -> distill -> prune maps back to the original teacher's layers.
    """
    mapping: list[int] | None = None
    for record in read_history(artifact.path):
        kept = record.get("prune", {}).get("kept_layers")
        if kept:
            mapping = list(kept) if mapping is None else [mapping[i] for i in kept]
    return mapping


def _precision(asked: str, device) -> str:
    """fp32 or bf16 for the student's forward and backward passes."""
    import torch

    if asked != "auto":
        return asked
    if device.type == "cuda":
        return "bf16"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "fp32"


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
