"""Zero-shot classification: an NLI (entailment) model ranks labels chosen at call time.

The graph is a sequence-pair classifier; the runtime pairs each text with "This example is <label>."
and reads the entailment logit (hfexport/runtime/tasks/zero_shot_classification.py).
"""

from __future__ import annotations

from hfexport.errors import ModelLoadError
from hfexport.tasks.text_classification import TextClassification

# Labels asked of plain evaluation text, so fidelity sees entailment, neutral and contradiction cases alike.
_EVAL_LABELS = ("sports", "politics", "science", "business", "the weather", "a person")


class ZeroShotClassification(TextClassification):
    name = "zero-shot-classification"
    aliases = ()
    # An NLI checkpoint's architecture says ForSequenceClassification: inferred as text-classification,
    # so this task is asked for by name (--task zero-shot-classification).
    architecture_suffixes = ()
    pair_input = True

    def check_model(self, config: dict) -> None:
        if None in _nli_ids(config):
            raise ModelLoadError(f"zero-shot classification needs an NLI model whose labels include entailment and "
                                 f"contradiction (id2label: {config.get('id2label')}); use --task text-classification")

    def manifest_fields(self, config: dict, tokenizer, pooling) -> dict:
        entail, contradict = _nli_ids(config)
        return {**super().manifest_fields(config, tokenizer, pooling), "entailment_id": entail,
                "contradiction_id": contradict}

    def eval_inputs(self, texts, mask_token=None) -> list:
        return [(text, f"This example is {_EVAL_LABELS[i % len(_EVAL_LABELS)]}.") for i, text in enumerate(texts)]

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        return {}

    def call(self, predictor, inputs: list):
        """The user's call for (text, hypothesis) rows: the hypothesis as the only label, as written."""
        hypotheses = {hypothesis for _, hypothesis in inputs}
        if len(hypotheses) == 1:  # one call for the batch, as an app asks one question of many texts
            return predictor([text for text, _ in inputs], candidate_labels=list(hypotheses), hypothesis_template="{}")
        return [predictor([text], candidate_labels=[hypothesis], hypothesis_template="{}")[0]
                for text, hypothesis in inputs]


def _nli_ids(config: dict) -> tuple[int | None, int | None]:
    """(entailment, contradiction) class indices from the model's label names."""
    by_name = {str(label).lower(): int(index) for index, label in (config.get("id2label") or {}).items()}
    return (next((i for name, i in by_name.items() if name.startswith("entail")), None),
            next((i for name, i in by_name.items() if name.startswith("contradict")), None))


SPEC = ZeroShotClassification()
