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
    # pool's whole range. Measured on MiniLM, 5,000 of a 45,000-sentence pool: held-out cosine mean the same
    # (0.845), worst case 0.536 -> 0.614; embedding that pool took 7.5 minutes in fp32 on 2 cores shared with
    # a test run (the pass embeds in bf16 where the CPU has it; not timed in the pass yet).
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
    # arithmetic (AVX512-BF16 or AMX), where it measured 1.6-1.9x faster per step on MiniLM than fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
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
        precision = _precision(cfg.precision, device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else _nullcontext()
        layer_map = _layer_map(artifact)
        loss_fn = _Loss(ctx, cfg, layer_map, teacher.config)
        texts = list(ctx.train_texts or ctx.calibration_texts)
        if len(texts) > cfg.max_texts and cfg.select == "diverse":
            texts = _diverse(texts, cfg.max_texts, teacher, loss_fn, device, cfg.seed, ctx.progress, autocast)
        texts = texts[: cfg.max_texts]
        random.Random(cfg.seed).shuffle(texts)
        n_hold = max(8, int(len(texts) * cfg.holdout))
        held, train = texts[:n_hold], texts[n_hold:]
        if len(train) < cfg.batch_size:
            raise PlanError(f"distillation needs at least {cfg.batch_size + n_hold} texts, got {len(texts)}; "
                            "pass more with --train-data")
        # Texts of similar length share a batch: less padding, so less compute per step.
        by_length = sorted(train, key=len)
        batches = [by_length[i:i + cfg.batch_size] for i in range(0, len(by_length), cfg.batch_size)]
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
        history = []
        ctx.progress.info(f"distilling on {len(train)} texts ({len(held)} held out), {total} steps on {device} "
                          f"({precision}); held-out fidelity before: {before:.4f}")
        stop = False
        cache: dict[int, dict] = {}
        cache_budget = cfg.teacher_cache_mb * 2**20
        augmenter = _Augmenter(train, cfg.seed, embedding_neighbours(teacher, loss_fn.tokenizer, train)) \
            if cfg.augment else None
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
                torch.nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm)
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
        loss_fn.close()
        student.load_state_dict(best_state)
        student = student.to("cpu").eval()
        teacher.to("cpu")  # frees the GPU; validation puts the shared reference model where it measures
        stats = {"device": str(device), "precision": precision, "steps": step, "train_texts": len(train),
                 "held_out_texts": len(held), "teacher_cached_batches": len(cache),
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
    """Edited copies of training texts: still text the teacher can label, but text the student has not seen.

    With a neighbour table (words -> their nearest words in the teacher's token embeddings, as TinyBERT
    used GloVe neighbours) half the copies swap about a third of their words for neighbours: "we bought a
    car" -> "we purchased a car"; the other half are crops, joins or word drops.
    """

    def __init__(self, texts: list[str], seed: int, neighbours: dict[str, list[str]] | None = None):
        self.rng = random.Random(seed + 7919)
        self.texts = texts
        self.words = sorted({w for t in texts for w in t.split() if w.isalpha()})
        self.neighbours = neighbours or {}

    def __call__(self, batch: list[str]) -> list[str]:
        return [self.one(text) for text in batch]

    def one(self, text: str) -> str:
        rng, words = self.rng, text.split()
        if self.neighbours and rng.random() < 0.5:
            swapped = [self._neighbour(w) if rng.random() < 0.35 else w for w in words]
            if swapped != words:
                return " ".join(swapped)
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

    def _neighbour(self, word: str) -> str:
        core = word.rstrip(_PUNCTUATION)
        options = self.neighbours.get(core.lower())
        if not options:
            return word
        pick = self.rng.choice(options)
        return (pick.capitalize() if core[:1].isupper() else pick) + word[len(core):]


_PUNCTUATION = ".,;:!?\"')"


def embedding_neighbours(model, tokenizer, texts: list[str], k: int = 8) -> dict[str, list[str]]:
    """Each word of `texts` that is a whole token -> its k nearest whole-word tokens in the input embeddings.

    Only words of four letters or more: the neighbours of "the" or "for" are other function words, and
    swapping those breaks sentences rather than varying them.
    """
    import torch
    import torch.nn.functional as F

    vocab = tokenizer.get_vocab()
    names = sorted(t for t in vocab if t.isalpha() and t.isascii() and len(t) > 3)
    if not names:
        return {}
    index = {name: j for j, name in enumerate(names)}
    table = model.get_input_embeddings().weight.detach().float().cpu()
    unit = F.normalize(table[torch.tensor([vocab[n] for n in names])], dim=-1)
    words = sorted({w.rstrip(_PUNCTUATION).lower() for t in texts for w in t.split()} & index.keys())
    out: dict[str, list[str]] = {}
    for start in range(0, len(words), 2048):
        chunk = words[start:start + 2048]
        nearest = (unit[torch.tensor([index[w] for w in chunk])] @ unit.T).topk(k + 1, dim=-1).indices
        for word, row in zip(chunk, nearest.tolist()):
            out[word] = [names[j] for j in row if names[j] != word][:k]
    return out


def _diverse(texts: list[str], count: int, teacher, loss_fn: _Loss, device, seed: int, progress,
             autocast) -> list[str]:
    """`count` texts that cover `texts`: spherical k-means on the teacher's pooled embeddings (the pooling the
    loss uses), then the text nearest each centre (distinct texts; an empty cluster keeps its random start)."""
    import torch
    import torch.nn.functional as F

    progress.info(f"choosing {count} of {len(texts)} training texts by k-means on the teacher's embeddings")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
    vectors = None
    with torch.no_grad(), autocast:
        for start in range(0, len(order), 128):
            chosen = order[start:start + 128]
            batch = loss_fn.encode([texts[i] for i in chosen], device)
            hidden = loss_fn._outputs(teacher, batch).hidden_states[-1]
            pooled = F.normalize(loss_fn._pool(hidden, batch["attention_mask"]), dim=-1).float().cpu()
            if vectors is None:
                vectors = torch.empty(len(texts), pooled.shape[-1])
            vectors[chosen] = pooled
    generator = torch.Generator().manual_seed(seed)
    centres = vectors[torch.randperm(len(texts), generator=generator)[:count]].clone()

    for _ in range(8):
        assign = torch.cat([(vectors[i:i + 4096] @ centres.T).argmax(1) for i in range(0, len(texts), 4096)])
        sums = torch.zeros_like(centres).index_add_(0, assign, vectors)
        sizes = torch.bincount(assign, minlength=count)
        filled = sizes > 0
        centres[filled] = F.normalize(sums[filled] / sizes[filled, None], dim=-1)
    # The nearest text to each centre, in chunks of the pool (a pool x centres matrix would not fit for
    # large pools); when two centres share a nearest text, the later one takes its nearest free text.
    best_sim = torch.full((count,), -2.0)
    best = torch.zeros(count, dtype=torch.long)
    for i in range(0, len(texts), 4096):
        value, index = (vectors[i:i + 4096] @ centres.T).max(0)
        better = value > best_sim
        best_sim[better], best[better] = value[better], index[better] + i
    picked, taken = [], set()
    for centre, index in enumerate(best.tolist()):
        if index in taken:
            ranked = (vectors @ centres[centre]).argsort(descending=True).tolist()
            index = next(j for j in ranked if j not in taken)
        taken.add(index)
        picked.append(texts[index])
    return picked


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


def _tensors(targets: dict):
    for value in targets.values():
        yield from (value if isinstance(value, list) else [value])


def _layer_map(artifact: TorchModel) -> list[int] | None:
    """Student layer i -> teacher layer, from the pruning records when layers were dropped.

    Prunes compose: a second prune's `kept_layers` index the first one's survivors, so a chain of
    prune -> distill -> prune maps back to the original teacher's layers.
    """
    history = artifact.path / "hfexport_history.json"
    if not history.is_file():
        return None
    mapping: list[int] | None = None
    for record in json.loads(history.read_text()):
        kept = record.get("prune", {}).get("kept_layers")
        if kept:
            mapping = list(kept) if mapping is None else [mapping[i] for i in kept]
    return mapping


def hidden_targets(kept: list[int], teacher_layers: int, mode: str = "span") -> list[int]:
    """For each student layer, the index into the teacher's hidden_states (0 = embeddings) it should match.

    Teacher 6 layers, kept [0, 4, 5]: "span" gives [4, 5, 6] (student layer 0 must hand layer 4's copy
    what teacher layer 4 reads); "copied" gives [1, 5, 6].
    """
    if mode == "copied":
        return [i + 1 for i in kept]
    return [*kept[1:], teacher_layers]


_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))


class _QKVTap:
    """Forward hooks that keep the last attention layer's query, key and value projections of each forward."""

    def __init__(self, model):
        import re

        found: dict[str, tuple[int, object]] = {}
        for name, module in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if any(leaf in names for names in _QKV_NAMES):
                layers = re.findall(r"\.(\d+)\.", f".{name}.")
                index = int(layers[-1]) if layers else -1
                if leaf not in found or index >= found[leaf][0]:
                    found[leaf] = (index, module)
        names = next((n for n in _QKV_NAMES if all(x in found for x in n)), None)
        if names is None:
            raise PlanError(f"relation distillation: no query/key/value projections found in "
                            f"{type(model).__name__}")
        self.captured: list = [None, None, None]
        self.handles = [found[leaf][1].register_forward_hook(self._hook(i)) for i, leaf in enumerate(names)]

    def _hook(self, slot: int):
        def keep(module, inputs, output):
            self.captured[slot] = output
        return keep

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def heads_per_projection(config) -> list[int]:
    """Relation heads for query, key and value: the attention heads, and the key/value heads (fewer under
    grouped-query attention)."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return [heads, kv_heads, kv_heads]


def _relation_kl(student, teacher, mask, heads: int, causal: bool):
    """KL(teacher || student) between scaled dot-product self-relations of [batch, tokens, dim] projections.

    Both sides are split into the same number of relation heads (their widths may differ), so the relation
    matrices are [batch, heads, tokens, tokens] whatever each model's head layout is.
    """
    import torch
    import torch.nn.functional as F

    def log_relations(x):
        b, n, d = x.shape
        if d % heads:
            raise PlanError(f"relation distillation: width {d} does not split into {heads} relation heads")
        x = x.view(b, n, heads, d // heads).transpose(1, 2)
        scores = x @ x.transpose(-1, -2) / (d // heads) ** 0.5
        keep = mask[:, None, None, :].bool()
        if causal:
            keep = keep & torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        return F.log_softmax(scores.masked_fill(~keep, -1e4), dim=-1)

    ls, lt = log_relations(student), log_relations(teacher)
    kl = (lt.exp() * (lt - ls)).sum(-1)  # [batch, heads, queries]
    real = mask[:, None, :].to(kl.dtype)
    return (kl * real).sum() / (real.sum() * heads)


class _Loss:
    """The task's output loss plus the hidden-state loss; `fidelity` scores held-out agreement."""

    def __init__(self, ctx: BuildContext, cfg: DistillConfig, layer_map: list[int] | None, teacher_config):
        self.task, self.cfg, self.layer_map = ctx.source.task, cfg, layer_map
        # Both sides split into the teacher's head counts, whatever the student kept.
        self.relation_heads = [cfg.relation_heads] * 3 if cfg.relation_heads else heads_per_projection(teacher_config)
        self._held: tuple[list[str], list] | None = None  # held-out texts -> their batches and teacher outputs
        self.tokenizer = ctx.hf_tokenizer()
        self.pooling = ctx.source.pooling or {"mode": "mean", "normalize": False}
        self.metric = "cosine_mean" if self.task == "feature-extraction" else "top1_agreement"
        self.student_tap: _QKVTap | None = None  # hooked on the student at its first relation step

    def close(self) -> None:
        if self.student_tap is not None:
            self.student_tap.remove()
            self.student_tap = None

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

        out: dict = {}
        with torch.no_grad():
            if self.cfg.relation_weight:
                # Hooked for this forward only: the teacher is the build's shared reference model.
                with _QKVTap(teacher) as tap:
                    t = self._outputs(teacher, batch)
                out["qkv"] = [x.half() for x in tap.captured]
            else:
                t = self._outputs(teacher, batch)
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
        if "qkv" in targets and self.student_tap is None:
            self.student_tap = _QKVTap(student)
        s = self._outputs(student, batch)
        if self.task == "feature-extraction":
            ts, ss = targets["pooled"].float(), self._pool(s.last_hidden_state.float(), mask)
            loss = (1 - F.cosine_similarity(ss, ts, dim=-1)).mean() + F.mse_loss(ss, ts)
        else:
            loss = self._logit_kl(s, targets, mask)
        if "hidden" in targets:
            token = mask.bool()
            hidden = sum(F.mse_loss(s.hidden_states[i + 1][token].float(), t[token].float())
                         for i, t in enumerate(targets["hidden"]))
            loss = loss + self.cfg.hidden_weight * hidden / len(targets["hidden"])
        if "qkv" in targets:
            causal = self.task == "text-generation"
            relation = sum(_relation_kl(sx.float(), tx.float(), mask, heads, causal)
                           for sx, tx, heads in zip(self.student_tap.captured, targets["qkv"], self.relation_heads))
            loss = loss + self.cfg.relation_weight * relation / 3
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

        # The teacher's side of every check is the same: encoded and computed once per held-out list.
        if self._held is None or self._held[0] is not texts:
            self._held = (texts, [self._held_reference(teacher, self.encode(texts[start:start + 64], device))
                                  for start in range(0, len(texts), 64)])
        was_training = student.training
        student.eval()
        scores = []
        with torch.no_grad():
            for batch, reference in self._held[1]:
                s = self._compared(self._outputs(student, batch), batch)
                if self.task == "feature-extraction":
                    scores.extend(F.cosine_similarity(s, reference, dim=-1).tolist())
                else:
                    agree = (s == reference).float()
                    if agree.dim() == 2:
                        agree = agree[batch["attention_mask"].bool()]
                    scores.extend(agree.tolist())
        student.train(was_training)
        return float(sum(scores) / max(len(scores), 1))

    def _held_reference(self, teacher, batch):
        """(batch, the teacher's side of the held-out comparison)."""
        import torch

        with torch.no_grad():
            return batch, self._compared(self._outputs(teacher, batch), batch)

    def _compared(self, outputs, batch):
        """What held-out fidelity compares between student and teacher: pooled embeddings, or argmax ids."""
        if self.task == "feature-extraction":
            return self._pool(outputs.last_hidden_state, batch["attention_mask"])
        name = "start_logits" if self.task == "question-answering" else "logits"
        return getattr(outputs, name).argmax(-1)
