"""Which training texts to distil on when there are more than the budget: a diverse subset.

NOTE: what diverse selection bought, and what it cost (docs/decisions/0020-diverse-distillation-texts.md).
"""

from __future__ import annotations

from hfexport.passes.distill.losses import DistillLoss


def sentence_vectors(loss_fn: DistillLoss, teacher, batch):
    """One vector per text: the task's pooled embedding where the target is one (the pooling the loss
    uses), else the mean of the teacher's last hidden state over real tokens."""
    outputs = loss_fn.forward(teacher, batch)
    if loss_fn.spec.distill_kind == "embedding":
        return loss_fn.task_targets(outputs, batch)["pooled"]
    hidden, mask = outputs.hidden_states[-1], batch["attention_mask"].unsqueeze(-1)
    m = mask.to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def diverse(texts: list[str], count: int, teacher, loss_fn: DistillLoss, device, seed: int, progress,
            autocast) -> list[str]:
    """`count` texts that cover `texts`: spherical k-means on the teacher's sentence vectors, then the text
    nearest each centre (distinct texts; an empty cluster keeps its random start)."""
    import torch
    import torch.nn.functional as F

    progress.info(f"choosing {count} of {len(texts)} training texts by k-means on the teacher's embeddings")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
    vectors = None
    with torch.no_grad(), autocast:
        for start in range(0, len(order), 128):
            chosen = order[start:start + 128]
            batch = loss_fn.encode([texts[i] for i in chosen], device)
            pooled = F.normalize(sentence_vectors(loss_fn, teacher, batch), dim=-1).float().cpu()
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
