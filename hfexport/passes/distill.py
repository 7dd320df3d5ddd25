"""Knowledge distillation: train the incoming (pruned) student to match the original model (the teacher).

Unlabelled text is enough: the teacher's outputs are the targets. The output loss fits the task
(cosine + MSE on pooled embeddings; KL with temperature on logits, per token where logits are per
token), plus an optional hidden-state loss through a layer map (student layer i -> the teacher layer it
was kept from, read from the pruning record). AdamW with linear warm-up and decay, gradient clipping,
early stopping on held-out fidelity (texts split off the training set, never the evaluation set).
"""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Literal

from pydantic import Field

from hfexport.artifacts import TorchModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import Pass, PassConfig
from hfexport.passes.prune import save_checkpoint


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
    max_length: int = Field(128, ge=8, description="training sequence length cap")
    max_texts: int = Field(5000, ge=16, description="training texts used at most")
    holdout: float = Field(0.1, gt=0, lt=0.5, description="share of training texts held out for early stopping")
    eval_every: int = Field(50, ge=1, description="steps between held-out checks")
    patience: int = Field(4, ge=1, description="held-out checks without improvement before stopping")
    # Data augmentation (as TinyBERT did for small training sets): the teacher labels any text, so each
    # epoch after the first replaces this share of batches with edited copies of their texts (a random
    # crop, two texts joined, words dropped, or words swapped for others from the training text). Those
    # batches need a fresh teacher forward (their targets cannot be cached), so steps cost more.
    augment: float = Field(0.0, ge=0, le=1, description="share of batches replaced by augmented copies")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    # NOTE: the teacher's targets are computed once per batch and reused every epoch (batches keep their
    # texts, grouped by length; only their order is shuffled). On 2 CPU cores the teacher's forward was a
    # third of each step. Targets are kept in fp16 up to this many MB, else recomputed each time.
    teacher_cache_mb: int = Field(2048, ge=0, description="memory for cached teacher targets (0 = off)")


class DistillPass(Pass[DistillConfig]):
    name = "distill"
    summary = "train the (pruned) model to match the original on unlabelled text"
    consumes = TorchModel
    produces = TorchModel
    config_class = DistillConfig

    def describe(self) -> str:
        return f"distill({self.config.epochs} epochs, lr {self.config.learning_rate})"

    def check(self, plan: PlanContext) -> None:
        if plan.source.task not in ("feature-extraction", "text-classification", "token-classification",
                                    "question-answering", "fill-mask", "text-generation"):
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
        teacher = ctx.torch_module(ctx.source.local_dir).to(device).eval()
        student = copy.deepcopy(ctx.torch_module(artifact.path)).to(device).train()
        texts = list(ctx.train_texts or ctx.calibration_texts)[: cfg.max_texts]
        random.Random(cfg.seed).shuffle(texts)
        n_hold = max(8, int(len(texts) * cfg.holdout))
        held, train = texts[:n_hold], texts[n_hold:]
        if len(train) < cfg.batch_size:
            raise PlanError(f"distillation needs at least {cfg.batch_size + n_hold} texts, got {len(texts)}; "
                            "pass more with --train-data")
        layer_map = _layer_map(artifact)
        loss_fn = _Loss(ctx, cfg, layer_map)
        # Texts of similar length share a batch: less padding, so less compute per step.
        by_length = sorted(train, key=len)
        batches = [by_length[i:i + cfg.batch_size] for i in range(0, len(by_length), cfg.batch_size)]
        steps_per_epoch = len(batches)
        total = min(cfg.max_steps or 10**9, steps_per_epoch * cfg.epochs)
        optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        warmup = max(1, int(total * cfg.warmup_ratio))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _nullcontext()

        before = loss_fn.fidelity(student, teacher, held, device)
        best, best_state, stale, step, started = before, copy.deepcopy(student.state_dict()), 0, 0, time.time()
        history = []
        ctx.progress.info(f"distilling on {len(train)} texts ({len(held)} held out), {total} steps on {device}; "
                          f"held-out fidelity before: {before:.4f}")
        stop = False
        cache: dict[int, dict] = {}
        cache_budget = cfg.teacher_cache_mb * 2**20
        augmenter = _Augmenter(train, cfg.seed) if cfg.augment else None
        for epoch in range(cfg.epochs):
            order = list(range(len(batches)))
            random.Random(cfg.seed + epoch).shuffle(order)
            for index in order:
                augmented = augmenter is not None and epoch > 0 and augmenter.rng.random() < cfg.augment
                encoded = loss_fn.encode(augmenter(batches[index]) if augmented else batches[index], device)
                targets = None if augmented else cache.get(index)
                if targets is None:
                    targets = loss_fn.targets(teacher, encoded)
                    if not augmented:  # an edited batch is never seen again: nothing to cache
                        size = sum(t.numel() * t.element_size() for t in _tensors(targets))
                        if size <= cache_budget:
                            cache[index], cache_budget = targets, cache_budget - size
                with autocast:
                    loss = loss_fn(student, encoded, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                if step % cfg.eval_every == 0 or step == total:
                    score = loss_fn.fidelity(student, teacher, held, device)
                    history.append({"step": step, "loss": round(loss.item(), 5), "held_out": round(score, 5)})
                    eta = (time.time() - started) / step * (total - step)
                    ctx.progress.info(f"step {step}/{total}  loss {loss.item():.4f}  held-out {score:.4f}  "
                                      f"ETA {eta:.0f}s")
                    if score > best + 1e-5:
                        best, best_state, stale = score, copy.deepcopy(student.state_dict()), 0
                    else:
                        stale += 1
                        if stale >= cfg.patience:
                            ctx.progress.info(f"early stop: no held-out gain in {cfg.patience} checks")
                            stop = True
                if step >= total or stop:
                    break
            if step >= total or stop:
                break
        student.load_state_dict(best_state)
        student = student.to("cpu").eval()
        teacher.to("cpu")  # the cached reference model serves validation next, on the CPU
        stats = {"device": str(device), "steps": step, "train_texts": len(train), "held_out_texts": len(held),
                 "teacher_cached_batches": len(cache),
                 "held_out_before": round(before, 5), "held_out_after": round(best, 5),
                 "held_out_metric": loss_fn.metric, "layer_map": layer_map, "history": history}
        out = ctx.stage_dir(self.name)
        save_checkpoint(student, artifact.path, out, ctx, {"distill": {k: v for k, v in stats.items()
                                                                       if k != "history"}})
        return TorchModel(out, stats=stats)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Augmenter:
    """Edited copies of training texts: still text the teacher can label, but text the student has not seen."""

    def __init__(self, texts: list[str], seed: int):
        self.rng = random.Random(seed + 7919)
        self.texts = texts
        self.words = sorted({w for t in texts for w in t.split() if w.isalpha()})

    def __call__(self, batch: list[str]) -> list[str]:
        return [self.one(text) for text in batch]

    def one(self, text: str) -> str:
        rng, words = self.rng, text.split()
        kind = rng.choice(("crop", "join", "drop", "swap"))
        if kind == "join" or len(words) < 6:
            return f"{text} {rng.choice(self.texts)}"
        if kind == "crop":
            size = rng.randint(max(4, len(words) // 2), len(words) - 1)
            start = rng.randint(0, len(words) - size)
            return " ".join(words[start:start + size])
        # drop or swap: about one word in seven, at least one
        chosen = set(rng.sample(range(len(words)), max(1, round(len(words) * 0.15))))
        if kind == "drop" or not self.words:
            return " ".join(w for i, w in enumerate(words) if i not in chosen)
        return " ".join(rng.choice(self.words) if i in chosen else w for i, w in enumerate(words))


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tensors(targets: dict):
    for value in targets.values():
        yield from (value if isinstance(value, list) else [value])


def _layer_map(artifact: TorchModel) -> list[int] | None:
    """Student layer i -> teacher layer, from the pruning record when layers were dropped."""
    history = artifact.path / "hfexport_history.json"
    if not history.is_file():
        return None
    for record in reversed(json.loads(history.read_text())):
        kept = record.get("prune", {}).get("kept_layers")
        if kept:
            return kept
    return None


def hidden_targets(kept: list[int], teacher_layers: int, mode: str = "span") -> list[int]:
    """For each student layer, the index into the teacher's hidden_states (0 = embeddings) it should match.

    Teacher 6 layers, kept [0, 4, 5]: "span" gives [4, 5, 6] (student layer 0 must hand layer 4's copy
    what teacher layer 4 reads); "copied" gives [1, 5, 6].
    """
    if mode == "copied":
        return [i + 1 for i in kept]
    return [*kept[1:], teacher_layers]


class _Loss:
    """The task's output loss plus the hidden-state loss; `fidelity` scores held-out agreement."""

    def __init__(self, ctx: BuildContext, cfg: DistillConfig, layer_map: list[int] | None):
        self.task, self.cfg, self.layer_map = ctx.source.task, cfg, layer_map
        self.tokenizer = ctx.hf_tokenizer()
        self.pooling = ctx.source.pooling or {"mode": "mean", "normalize": False}
        self.metric = "cosine_mean" if self.task == "feature-extraction" else "top1_agreement"

    def encode(self, texts, device):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_length,
                               return_tensors="pt")
        return {k: v.to(device) for k, v in batch.items()}

    def _pool(self, hidden, mask):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling["mode"] == "cls":
            return hidden[:, 0]
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def _outputs(self, model, batch):
        return model(**batch, output_hidden_states=True, return_dict=True)

    def targets(self, teacher, batch) -> dict:
        """What the student is trained to match, from one teacher forward (stored in fp16)."""
        import torch

        with torch.no_grad():
            t = self._outputs(teacher, batch)
        out: dict = {}
        if self.task == "feature-extraction":
            out["pooled"] = self._pool(t.last_hidden_state, batch["attention_mask"]).half()
        else:
            for name in ("start_logits", "end_logits") if self.task == "question-answering" else ("logits",):
                out[name] = getattr(t, name).half()
        if self.cfg.hidden_weight and self.layer_map is not None:
            out["hidden"] = [t.hidden_states[i].half() for i in hidden_targets(self.layer_map, len(t.hidden_states) - 1,
                                                                          self.cfg.hidden_map)]
        return out

    def __call__(self, student, batch, targets):
        import torch.nn.functional as F

        mask = batch["attention_mask"]
        s = self._outputs(student, batch)
        if self.task == "feature-extraction":
            ts, ss = targets["pooled"].float(), self._pool(s.last_hidden_state, mask)
            loss = (1 - F.cosine_similarity(ss, ts, dim=-1)).mean() + F.mse_loss(ss, ts)
        else:
            loss = self._logit_kl(s, targets, mask)
        if "hidden" in targets:
            token = mask.bool()
            hidden = sum(F.mse_loss(s.hidden_states[i + 1][token], t[token].float())
                         for i, t in enumerate(targets["hidden"]))
            loss = loss + self.cfg.hidden_weight * hidden / len(targets["hidden"])
        return loss

    def _logit_kl(self, s, t, mask):
        import torch.nn.functional as F

        temp = self.cfg.temperature
        names = ("start_logits", "end_logits") if self.task == "question-answering" else ("logits",)
        total = 0.0
        for name in names:
            sl, tl = getattr(s, name).float(), t[name].float()
            if self.task == "text-generation":
                sl, tl = sl[:, :-1], tl[:, :-1]
            kl = F.kl_div(F.log_softmax(sl / temp, -1), F.log_softmax(tl / temp, -1), log_target=True,
                          reduction="none").sum(-1)
            if kl.dim() == 2:  # per token: average over real tokens only
                m = mask[:, : kl.shape[1]].to(kl.dtype)
                kl = (kl * m).sum() / m.sum()
            total = total + kl.mean() * temp * temp
        return total

    def fidelity(self, student, teacher, texts, device) -> float:
        import torch
        import torch.nn.functional as F

        was_training = student.training
        student.eval()
        scores = []
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                batch = self.encode(texts[start:start + 64], device)
                s, t = self._outputs(student, batch), self._outputs(teacher, batch)
                if self.task == "feature-extraction":
                    mask = batch["attention_mask"]
                    cos = F.cosine_similarity(self._pool(s.last_hidden_state, mask),
                                              self._pool(t.last_hidden_state, mask), dim=-1)
                    scores.extend(cos.tolist())
                else:
                    name = "start_logits" if self.task == "question-answering" else "logits"
                    agree = (getattr(s, name).argmax(-1) == getattr(t, name).argmax(-1)).float()
                    if agree.dim() == 2:
                        agree = agree[batch["attention_mask"].bool()]
                    scores.extend(agree.tolist())
        student.train(was_training)
        return float(sum(scores) / max(len(scores), 1))
