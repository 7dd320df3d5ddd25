"""What every encoder exporter shares: the task's graph around a PyTorch model, a sample batch, the
output axes the task names, and the typed check of an exported graph against PyTorch on that batch.

Text tasks take the tokenizer's inputs the model's forward accepts and uses; image tasks take pixel_values
[batch, 3, height, width] with the height and width the image processor fixes (only batch is dynamic).
"""

from __future__ import annotations

from dataclasses import dataclass

from hfexport.errors import ExportError
from hfexport.tasks import get_task

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_INPUTS = ("pixel_values",)
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
        """Exporter `dynamic_axes`: batch and sequence on every token input (batch only on pixel_values), and on
        each output the axes its task names batch or sequence (a classifier's logits are [batch, labels])."""
        axes = {name: {0: "batch"} if name in IMAGE_INPUTS else {0: "batch", 1: "sequence"}
                for name in self.input_names}
        axes.update({output.name: output.dynamic_axes for output in self.task_outputs})
        return axes


def task_graph(model, processor, task: str) -> TaskGraph:
    """`processor`: the tokenizer (text tasks) or the image processor (image tasks)."""
    import torch

    spec = get_task(task)
    if getattr(spec, "modality", "text") == "audio":  # two clips of different lengths, padded
        from hfexport.data import synthetic_audio

        rate = processor.sampling_rate
        sample = dict(processor([synthetic_audio(index, rate) for index in (0, 1)], sampling_rate=rate,
                                padding=True, return_tensors="pt"))
        if "attention_mask" in sample:
            sample["attention_mask"] = sample["attention_mask"].long()  # the runtime feeds int64
        input_names = ["input_values", *(["attention_mask"] if "attention_mask" in sample else [])]
    elif getattr(spec, "modality", "text") == "image":
        from hfexport.data import synthetic_image

        sample = dict(processor(images=[synthetic_image(index) for index in (0, 1)], return_tensors="pt"))
        input_names = ["pixel_values"]
    else:
        # A fixed, odd sample length keeps the sequence axis apart from any label count.
        sample = tokenizer_sample(processor)
        input_names = used_token_inputs(model, sample)
    outputs = spec.outputs
    output_names = [output.name for output in outputs]
    model = whole_map_pools(model)
    wrapper = wrap(model, input_names, output_names, getattr(spec, "graph_outputs", None))
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapper(*[sample[n] for n in input_names])]
    return TaskGraph(model, wrapper, sample, input_names, output_names, expected, outputs)


def whole_map_pools(model):
    """The model with every average pool whose window covers the whole feature map as a global average pool.

    EfficientNet pools with `AvgPool2d(hidden_dim, ceil_mode=True)`: a 1280-wide window over a 7x7 map, which
    PyTorch clips to the map and OpenVINO refuses ("Kernel ... larger than the data shape"). A window at least
    the input image's size covers any feature map, so AdaptiveAvgPool2d(1) computes the same; the swap is made
    on a copy (the reference stays the original) and the export is checked against PyTorch as always."""
    import copy

    import torch

    size = getattr(getattr(model, "config", None), "image_size", None)
    if not isinstance(size, int):
        return model

    def covers(module) -> bool:
        if not isinstance(module, torch.nn.AvgPool2d):
            return False
        kernel = module.kernel_size if isinstance(module.kernel_size, int) else min(module.kernel_size)
        return module.ceil_mode and kernel >= size and module.padding in (0, (0, 0))

    if not any(covers(module) for module in model.modules()):
        return model
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if covers(module):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child,
                    torch.nn.AdaptiveAvgPool2d(1))
    return model


def tokenizer_sample(tokenizer) -> dict:
    return tokenizer(SAMPLE_TEXTS, padding="max_length", max_length=SAMPLE_LENGTH, truncation=True,
                     return_tensors="pt")


def used_token_inputs(model, sample) -> list[str]:
    """The tokenizer outputs the model's forward takes and uses. token_type_ids is left out where the model
    has no token type embedding (`type_vocab_size: 0`, e.g. DeBERTa-v3): tracing drops an unused input from
    the graph, so feeding it would fail (`Invalid input name: token_type_ids`)."""
    accepted = set(forward_parameters(model))
    names = [n for n in TOKEN_INPUTS if n in sample and n in accepted]
    if getattr(getattr(model, "config", None), "type_vocab_size", None) == 0 and "token_type_ids" in names:
        names.remove("token_type_ids")
    return names


def keep_file_inputs(graph: TaskGraph, file_inputs: list[str]) -> None:
    """The graph's inputs become exactly the exported file's: a tracer drops an input the model ignores,
    and the check, the manifest's signature and the runtime's feeds then follow the file."""
    unknown = [n for n in file_inputs if n not in graph.input_names]
    if unknown:
        raise ExportError(f"the exported graph asks for input {unknown[0]!r}, which the task does not provide")
    graph.input_names[:] = [n for n in graph.input_names if n in file_inputs]


def check_against_torch(graph: TaskGraph, got: list, tolerance: float, what: str = "exported graph") -> float:
    """The largest difference to PyTorch over real tokens; ExportError past `tolerance`.

    A typed check, not a warning: a graph that disagrees with PyTorch is not passed on.
    """
    import numpy as np

    mask = graph.sample["attention_mask"].numpy().astype(bool) if "attention_mask" in graph.sample else None
    worst = 0.0
    for name, g, w in zip(graph.output_names, got, graph.expected):
        diff = np.abs(np.asarray(g, dtype=np.float64) - w)
        if mask is not None and diff.shape[:2] == mask.shape:
            diff = diff[mask]  # padded positions carry no meaning
        worst = max(worst, float(diff.max()))
        if worst > tolerance:
            raise ExportError(f"{what} output {name!r} differs from PyTorch by {worst:.2e} "
                              f"(tolerance {tolerance:.0e})")
    return worst


def forward_parameters(model) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)


def wrap(model, input_names: list[str], output_names: list[str], select=None):
    """A module with positional tensor inputs and a tuple of tensor outputs, as exporters want; `select` (a
    task's `graph_outputs`) computes them from the ModelOutput where they are not plain fields of it."""
    import torch

    class TaskModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            outputs = self.model(**dict(zip(input_names, tensors)), return_dict=True)
            if select is not None:
                return tuple(select(outputs))
            return tuple(outputs[name] for name in output_names)

    return TaskModule().eval()
