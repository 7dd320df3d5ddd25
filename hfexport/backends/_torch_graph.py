"""What every encoder exporter shares: the task's graph around a PyTorch model, a sample batch, the
output axes the task names, and the typed check of an exported graph against PyTorch on that batch."""

from __future__ import annotations

from dataclasses import dataclass

from hfexport.errors import ExportError
from hfexport.tasks import get_task

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE_LENGTH = 19
SAMPLE_TEXTS = ["hfexport traces the model with this sentence.", "A second, longer sample text sets the batch axis apart."]


@dataclass
class TaskGraph:
    """The PyTorch model as exporters want it, with a sample batch and PyTorch's outputs on it."""

    model: object  # the transformers model
    wrapper: object  # positional tensor inputs, a tuple of tensor outputs
    sample: dict  # tokenised sample batch (torch tensors)
    input_names: list[str]
    output_names: list[str]
    expected: list  # PyTorch's outputs on the sample, as numpy arrays
    task_outputs: tuple = ()  # the task's Output(name, axes) values, in output order

    def sample_inputs(self) -> tuple:
        return tuple(self.sample[n] for n in self.input_names)

    def sample_feeds(self) -> dict:
        return {n: self.sample[n].numpy() for n in self.input_names}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Exporter `dynamic_axes`: batch and sequence on every input, and on each output the axes its task
        names batch or sequence (a classifier's logits are [batch, labels])."""
        axes = {name: {0: "batch", 1: "sequence"} for name in self.input_names}
        axes.update({output.name: output.dynamic_axes for output in self.task_outputs})
        return axes


def task_graph(model, tokenizer, task: str) -> TaskGraph:
    import torch

    # A fixed, odd sample length keeps the sequence axis apart from any label count.
    sample = tokenizer(SAMPLE_TEXTS, padding="max_length", max_length=SAMPLE_LENGTH, truncation=True,
                       return_tensors="pt")
    accepted = set(forward_parameters(model))
    input_names = [n for n in TOKEN_INPUTS if n in sample and n in accepted]
    outputs = get_task(task).outputs
    output_names = [output.name for output in outputs]
    wrapper = wrap(model, input_names, output_names)
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapper(*[sample[n] for n in input_names])]
    return TaskGraph(model, wrapper, sample, input_names, output_names, expected, outputs)


def check_against_torch(graph: TaskGraph, got: list, tolerance: float, what: str = "exported graph") -> float:
    """The largest difference to PyTorch over real tokens; ExportError past `tolerance`.

    A typed check, not a warning: a graph that disagrees with PyTorch is not passed on.
    """
    import numpy as np

    mask = graph.sample["attention_mask"].numpy().astype(bool)
    worst = 0.0
    for name, g, w in zip(graph.output_names, got, graph.expected):
        diff = np.abs(np.asarray(g, dtype=np.float64) - w)
        if diff.shape[:2] == mask.shape:
            diff = diff[mask]  # padded positions carry no meaning
        worst = max(worst, float(diff.max()))
        if worst > tolerance:
            raise ExportError(f"{what} output {name!r} differs from PyTorch by {worst:.2e} "
                              f"(tolerance {tolerance:.0e})")
    return worst


def forward_parameters(model) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)


def wrap(model, input_names: list[str], output_names: list[str]):
    """A module with positional tensor inputs and a tuple of tensor outputs, as exporters want."""
    import torch

    class TaskModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            outputs = self.model(**dict(zip(input_names, tensors)), return_dict=True)
            return tuple(outputs[name] for name in output_names)

    return TaskModule().eval()
