"""The distillation loop: AdamW with linear warm-up and decay, gradient clipping, teacher targets cached
per batch, optional augmented batches, early stopping on held-out fidelity, the best state kept."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field

from hfexport.passes.distill.augment import Augmenter, embedding_neighbours
from hfexport.passes.distill.distributed import Checkpoints, World, check_batch
from hfexport.passes.distill.losses import DistillLoss


@dataclass
class TrainResult:
    steps: int
    before: float  # held-out fidelity of the student as it came in
    best: float  # ... and of the state kept (the best seen)
    cached_batches: int  # batches whose teacher targets were kept for every epoch
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "held_out"} per held-out check


def train(student, teacher, loss_fn: DistillLoss, train_texts: list[str], held: list[str], cfg, device,
          autocast, precision: str, progress, world: World | None = None) -> TrainResult:
    """Train `student` in place towards `teacher` and leave it holding its best held-out state.

    `cfg` is the pass's DistillConfig; `autocast` the context the student's forward runs under; `world` the
    launcher's processes (one by default): each global batch is split into micro-batches across them.
    """
    import torch

    world = world or World()
    accumulation = cfg.gradient_accumulation
    check_batch(cfg.batch_size, world, accumulation)
    # Texts of similar length share a batch: less padding, so less compute per step. A last batch too small to
    # give every process and micro-batch a text is left out.
    by_length = sorted(train_texts, key=len)
    batches = [by_length[i:i + cfg.batch_size] for i in range(0, len(by_length), cfg.batch_size)]
    batches = [b for b in batches if len(b) >= world.size * accumulation]
    steps_per_epoch = len(batches)
    total = min(cfg.max_steps or 10**9, steps_per_epoch * cfg.epochs)
    if not cfg.train_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    trained = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = max(1, int(total * cfg.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))

    before = loss_fn.fidelity(student, teacher, held, device)
    best, best_state, stale, step, started = before, copy.deepcopy(student.state_dict()), 0, 0, time.time()
    history: list[dict] = []
    checkpoints = Checkpoints(cfg.checkpoint_dir, cfg.checkpoint_every, cfg, train_texts, world)
    resumed = checkpoints.load()
    if resumed is not None:
        student.load_state_dict(resumed["student"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        best_state, best, stale, step = resumed["best_state"], resumed["best"], resumed["stale"], resumed["step"]
        history = list(resumed["history"])
        torch.set_rng_state(resumed["torch_rng"])
        progress.info(f"resumed from {checkpoints.path} at step {step}")
    model = world.wrap(student, device)
    where = f"{world.size} processes" if world.distributed else str(device)
    progress.info(f"distilling on {len(train_texts)} texts ({len(held)} held out), {total} steps on {where} "
                  f"({precision}); held-out fidelity before: {before:.4f}")
    stop = step >= total
    # NOTE: teacher targets computed once per batch and reused every epoch
    # (docs/decisions/0022-teacher-target-cache.md).
    cache: dict[int, dict] = {}
    cache_budget = cfg.teacher_cache_mb * 2**20
    augmenter = Augmenter(train_texts, cfg.seed, embedding_neighbours(teacher, loss_fn.tokenizer, train_texts)) \
        if cfg.augment else None
    done = step  # steps already taken (a resumed run skips them in the same order)
    for epoch in range(cfg.epochs):
        order = list(range(len(batches)))
        random.Random(cfg.seed + epoch).shuffle(order)
        for index in order:
            if stop:
                break
            if done > 0:
                done -= 1
                continue
            augmented = augmenter is not None and epoch > 0 and augmenter.rng.random() < cfg.augment
            texts = augmenter(batches[index]) if augmented else batches[index]
            shares = world.shares(texts, accumulation)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for k, share in enumerate(shares):
                encoded = loss_fn.encode(share, device)
                targets = None if augmented else cache.get((index, k))
                if targets is None:
                    targets = loss_fn.targets(teacher, encoded)
                    if not augmented:  # an edited batch is never seen again: nothing to cache
                        size = sum(t.numel() * t.element_size() for t in _tensors(targets))
                        if size <= cache_budget:
                            cache[(index, k)], cache_budget = targets, cache_budget - size
                with world.no_sync(model, last=k == len(shares) - 1):
                    with autocast:
                        loss = loss_fn(model, encoded, targets) / len(shares)
                    loss.backward()
                step_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            step_loss = world.mean(step_loss)
            if step % cfg.eval_every == 0 or step == total:
                score = loss_fn.fidelity(student, teacher, held, device)
                history.append({"step": step, "loss": round(step_loss, 5), "held_out": round(score, 5)})
                eta = (time.time() - started) / step * (total - step)
                progress.info(f"step {step}/{total}  loss {step_loss:.4f}  held-out {score:.4f}  ETA {eta:.0f}s")
                if score > best + 1e-5:
                    best, best_state, stale = score, copy.deepcopy(student.state_dict()), 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        progress.info(f"early stop: no held-out gain in {cfg.patience} checks")
                        stop = True
            if checkpoints.due(step):
                checkpoints.save({"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "best_state": best_state, "best": best,
                                  "stale": stale, "step": step, "history": history,
                                  "torch_rng": torch.get_rng_state()})
            stop = stop or step >= total
    loss_fn.close()
    checkpoints.clear()  # the stage is written next; a finished training needs no resume point
    student.load_state_dict(best_state)
    return TrainResult(steps=step, before=before, best=best, cached_batches=len(cache), history=history)


def _tensors(targets: dict):
    for value in targets.values():
        yield from (value if isinstance(value, list) else [value])
