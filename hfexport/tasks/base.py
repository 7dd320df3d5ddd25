"""TaskSpec: everything the build side knows about one task, in one object.

A task module (`hfexport/tasks/<task>.py`) defines one TaskSpec subclass and `SPEC = ThatClass()`; the
registry finds it by file. The torch-free pre/post-processing lives beside it in
`hfexport/runtime/tasks/<task>.py`. Adding a task is those two files plus tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

# Axis names that vary between calls; every other named axis is fixed by the model (hidden, labels, vocab).
DYNAMIC_AXES = ("batch", "sequence")


@dataclass(frozen=True)
class Output:
    """One graph output, its axes named (not probed from a sample)."""

    name: str
    axes: tuple[str, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: axis for i, axis in enumerate(self.axes) if axis in DYNAMIC_AXES}


class TaskSpec:
    name: ClassVar[str]
    auto_class: ClassVar[str]  # the transformers Auto class that loads a model for this task
    outputs: ClassVar[tuple[Output, ...]]
    aliases: ClassVar[tuple[str, ...]] = ()  # other names users type for it (`--task ner`)
    # Endings of `config.architectures` class names that mean this task (task inference from a folder).
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()
    pair_input: ClassVar[bool] = False  # inputs are (first, second) text pairs, e.g. (question, context)
    generative: ClassVar[bool] = False  # exported with a KV cache and run by the runtime's generation loop
    # What the inputs are: tokenised text, images, or audio clips (raw waveforms).
    modality: ClassVar[Literal["text", "image", "audio"]] = "text"
    # Fidelity gates: the defaults, and every metric a recipe may gate this task on.
    default_gates: ClassVar[dict[str, float]] = {}
    # `comparable` works on one calibration text's outputs alone (no pairs, mask tokens or sequence ids), so a
    # quantiser can measure its choices with this task's fidelity (attention_int8: auto).
    calibration_fidelity: ClassVar[bool] = False
    # `comparable` depends on the padded batch (speech frames): validation then compares batches as they are and
    # does not run the bundle a second time one input at a time.
    padded_comparable: ClassVar[bool] = False
    gate_metrics: ClassVar[frozenset[str]] = frozenset()
    # Distillation: the kind of target the student matches and the held-out metric that scores it.
    distill_kind: ClassVar[Literal["embedding", "logits"]] = "logits"
    distill_metric: ClassVar[Literal["cosine_mean", "top1_agreement"]] = "top1_agreement"

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(output.name for output in self.outputs)

    def __repr__(self) -> str:
        return f"<TaskSpec {self.name}>"

    # -- loading ----------------------------------------------------------------------------------

    def check_model(self, config: dict) -> None:
        """Refuse a model this task cannot use (ModelLoadError naming the fix), before any work starts."""

    def check_folder(self, folder, config: dict) -> None:
        """Refuse a model folder whose files this task cannot use (e.g. no fast tokenizer), before any work."""

    def pooling(self, folder) -> dict | None:
        """How a model folder pools token states into one vector (embedding tasks only)."""
        return None

    def manifest_fields(self, config: dict, tokenizer, pooling: dict | None) -> dict:
        """The task's own fields of the manifest's `model` section (labels, mask token, pooling)."""
        return {}

    # -- evaluation -------------------------------------------------------------------------------

    def eval_inputs(self, texts: list[str], mask_token: str | None = None) -> list:
        """Evaluation inputs for this task, derived from plain text deterministically."""
        return list(texts)

    def labelled_examples(self, rows: list[dict], *, text_column: str | None, label_column: str | None,
                          source: str) -> tuple[list, list]:
        """(inputs, labels) from a user's rows; labels empty when the rows have none."""
        from hfexport.data import text_examples

        return text_examples(rows, text_column=text_column, label_column=label_column, source=source)

    def fidelity_inputs(self, inputs: list, texts: list[str], mask_token: str | None) -> list:
        """What fidelity compares, given a user's labelled inputs (usually the inputs themselves)."""
        return inputs

    def comparable(self, outputs: dict, attention_mask, input_ids, sequence_ids, meta) -> Any:
        """What fidelity compares, from raw graph outputs (numpy) of one batch."""
        raise NotImplementedError(f"{self.name}: no encoder-style comparison")

    def fidelity(self, reference: list, candidate: list) -> dict[str, float]:
        raise NotImplementedError(f"{self.name}: no encoder-style fidelity")

    def labelled_metrics(self, runner, inputs: list, labels: list, meta, batch: int) -> dict[str, float]:
        """Accuracy, F1, Spearman or exact match of one runner on labelled data; {} where not defined."""
        return {}

    def call(self, predictor, inputs: list):
        """How a user's app calls a loaded bundle with evaluation inputs (what latency measures)."""
        return predictor(inputs)

    def thresholds(self, overrides: dict[str, float | None]) -> dict[str, float]:
        """The gates a build is judged by: the task's defaults, with the recipe's values for its metrics."""
        chosen = dict(self.default_gates)
        chosen.update({k: v for k, v in overrides.items() if v is not None and k in self.gate_metrics})
        return chosen

    def foreign_gates(self, gates: dict[str, float | None]) -> list[str]:
        """Gates a recipe sets that this task does not measure (refused by the planner)."""
        return sorted(k for k, v in gates.items() if v is not None and k not in self.gate_metrics)

    # -- distillation (torch; imported lazily by the distill pass) ---------------------------------

    def distill_targets(self, outputs, attention_mask, pooling: dict | None) -> dict:
        """What the student is trained to match, from one forward's ModelOutput."""
        return {name: getattr(outputs, name) for name in self.output_names}

    def distill_compared(self, outputs, attention_mask, pooling: dict | None):
        """What the held-out check compares between student and teacher: argmax ids of the first output."""
        return getattr(outputs, self.output_names[0]).argmax(-1)
