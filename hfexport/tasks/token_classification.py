"""Token classification (NER): a label per token, grouped into entities by the runtime."""

from __future__ import annotations

from hfexport.tasks._labelled import batched, token_classification
from hfexport.tasks.base import Output, TaskSpec
from hfexport.tasks.text_classification import labels_of


class TokenClassification(TaskSpec):
    name = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    outputs = (Output("logits", ("batch", "sequence", "labels")),)
    aliases = ("ner",)
    architecture_suffixes = ("ForTokenClassification",)
    calibration_fidelity = True
    default_gates = {"token_agreement": 0.98}
    gate_metrics = frozenset(default_gates)

    def manifest_fields(self, config: dict, tokenizer, pooling) -> dict:
        return labels_of(config)

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.data import text_examples, word_labelled_examples

        words = text_column or "tokens"
        if isinstance(rows[0].get(words), list):  # CoNLL-style rows: a list of words and a list of tags
            return word_labelled_examples(rows, words, label_column, source)
        return text_examples(rows, text_column=text_column, label_column=label_column, source=source)

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        labels = outputs["logits"].argmax(-1)
        return [row[mask == 1] for row, mask in zip(labels, attention_mask)]

    def fidelity(self, reference, candidate) -> dict[str, float]:
        agree = [float((r == c).mean()) if r.shape == c.shape else 0.0 for r, c in zip(reference, candidate)]
        total = sum(len(r) for r in reference)
        same = sum(float((r == c).sum()) if r.shape == c.shape else 0.0 for r, c in zip(reference, candidate))
        return {"token_agreement": same / max(total, 1), "sentence_min": float(min(agree))}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        if not (labels and isinstance(labels[0], dict)):
            return {}
        return token_classification(batched(runner.token_predictions, inputs, batch), labels,
                                    meta.id2label or {})


SPEC = TokenClassification()
