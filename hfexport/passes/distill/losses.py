"""What the student is trained to match and how far it is: the task's output loss, hidden-state and
attention-relation losses, and the held-out fidelity score.

Task-generic: the task's TaskSpec says which outputs are the target (`distill_targets`, with the model's
own pooling for embeddings), what the held-out check compares (`distill_compared`) and by which metric.
This module only knows the two kinds of target: an embedding (cosine + MSE) and logits (KL with
temperature, averaged over real tokens when there is one distribution per token).
"""

from __future__ import annotations

import re

from hfexport.context import BuildContext
from hfexport.errors import PlanError
from hfexport.tasks import get_task


def hidden_targets(kept: list[int], teacher_layers: int, mode: str = "span") -> list[int]:
    """For each student layer, the index into the teacher's hidden_states (0 = embeddings) it should match.

    Teacher 6 layers, kept [0, 4, 5]: "span" gives [4, 5, 6] (student layer 0 must hand layer 4's copy
    what teacher layer 4 reads); "copied" gives [1, 5, 6].
    """
    if mode == "copied":
        return [i + 1 for i in kept]
    return [*kept[1:], teacher_layers]


_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))


class QKVTap:
    """Forward hooks that keep the last attention layer's query, key and value projections of each forward."""

    def __init__(self, model):
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


def relation_kl(student, teacher, mask, heads: int, causal: bool):
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


class DistillLoss:
    """The task's output loss plus the hidden-state and relation losses; `fidelity` scores held-out agreement.

    `cfg` is the pass's DistillConfig (temperature, weights, hidden_map, max_length).
    """

    def __init__(self, ctx: BuildContext, cfg, layer_map: list[int] | None, teacher_config):
        self.spec, self.cfg, self.layer_map = get_task(ctx.source.task), cfg, layer_map
        # Both sides split into the teacher's head counts, whatever the student kept.
        self.relation_heads = [cfg.relation_heads] * 3 if cfg.relation_heads else heads_per_projection(teacher_config)
        self._held: tuple[list[str], list] | None = None  # held-out texts -> their batches and teacher outputs
        self.tokenizer = ctx.hf_tokenizer()
        self.pooling = ctx.source.pooling  # the model's own pooling (embedding tasks); None elsewhere
        self.metric = self.spec.distill_metric
        self.student_tap: QKVTap | None = None  # hooked on the student at its first relation step

    def close(self) -> None:
        if self.student_tap is not None:
            self.student_tap.remove()
            self.student_tap = None

    def encode(self, texts, device):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_length,
                               return_tensors="pt")
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, model, batch):
        return model(**batch, output_hidden_states=True, return_dict=True)

    def task_targets(self, outputs, batch) -> dict:
        """The task's part of the target: {"pooled": ...} or its logits, by name."""
        return self.spec.distill_targets(outputs, batch["attention_mask"], self.pooling)

    def targets(self, teacher, batch) -> dict:
        """What the student is trained to match, from one teacher forward (stored in fp16)."""
        import torch

        out: dict = {}
        with torch.no_grad():
            if self.cfg.relation_weight:
                # Hooked for this forward only: the teacher is the build's shared reference model.
                with QKVTap(teacher) as tap:
                    t = self.forward(teacher, batch)
                out["qkv"] = [x.half() for x in tap.captured]
            else:
                t = self.forward(teacher, batch)
            out.update((name, value.half()) for name, value in self.task_targets(t, batch).items())
        if self.cfg.hidden_weight and self.layer_map is not None:
            out["hidden"] = [t.hidden_states[i].half() for i in hidden_targets(self.layer_map, len(t.hidden_states) - 1,
                                                                          self.cfg.hidden_map)]
        return out

    def __call__(self, student, batch, targets):
        import torch.nn.functional as F

        mask = batch["attention_mask"]
        if "qkv" in targets and self.student_tap is None:
            self.student_tap = QKVTap(getattr(student, "module", student))  # under DDP: the wrapped model
        s = self.forward(student, batch)
        predicted = self.task_targets(s, batch)
        if self.spec.distill_kind == "embedding":
            ts, ss = targets["pooled"].float(), predicted["pooled"].float()
            loss = (1 - F.cosine_similarity(ss, ts, dim=-1)).mean() + F.mse_loss(ss, ts)
        else:
            loss = self._logit_kl(predicted, targets, mask)
        if "hidden" in targets:
            token = mask.bool()
            hidden = sum(F.mse_loss(s.hidden_states[i + 1][token].float(), t[token].float())
                         for i, t in enumerate(targets["hidden"]))
            loss = loss + self.cfg.hidden_weight * hidden / len(targets["hidden"])
        if "qkv" in targets:
            relation = sum(relation_kl(sx.float(), tx.float(), mask, heads, self.spec.generative)
                           for sx, tx, heads in zip(self.student_tap.captured, targets["qkv"], self.relation_heads))
            loss = loss + self.cfg.relation_weight * relation / 3
        return loss

    def _logit_kl(self, predicted: dict, targets: dict, mask):
        import torch.nn.functional as F

        temp = self.cfg.temperature
        total = 0.0
        for name, student_logits in predicted.items():
            sl, tl = student_logits.float(), targets[name].float()
            if self.spec.generative:  # position t predicts token t + 1; the last has nothing to predict
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
                s = self.compared(self.forward(student, batch), batch)
                if self.metric == "cosine_mean":
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
            return batch, self.compared(self.forward(teacher, batch), batch)

    def compared(self, outputs, batch):
        """What held-out fidelity compares between student and teacher: pooled embeddings, or argmax ids."""
        return self.spec.distill_compared(outputs, batch["attention_mask"], self.pooling)
