"""Knowledge distillation: train the incoming (pruned) student to match the original model (the teacher).

Unlabelled text is enough: the teacher's outputs are the targets. The output loss fits the task
(cosine + MSE on pooled embeddings; KL with temperature on logits, per token where logits are per
token), plus an optional hidden-state loss through a layer map (student layer i -> the teacher layer it
was kept from, read from the pruning record). AdamW with linear warm-up and decay, gradient clipping,
early stopping on held-out fidelity (texts split off the training set, never the evaluation set).

Modules: `distill_pass` (config and pass), `losses` (targets, losses, held-out fidelity), `selection`
(diverse training texts), `augment` (edited copies of texts), `trainer` (the optimisation loop).
"""

from hfexport.passes.distill.distill_pass import DistillConfig, DistillPass

__all__ = ["DistillConfig", "DistillPass"]
