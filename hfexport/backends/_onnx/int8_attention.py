"""`attention_int8: auto`: which fused Attention nodes run in int8 (QAttention), chosen by measuring the model.

ONNX Runtime's BERT fusion puts the Q/K/V projection inside one Attention operator, which MatMul-only int8 leaves
in float. Quantising it too (QAttention: the layer's input as uint8, the packed Q/K/V weight as int8 per column)
runs all-MiniLM-L6-v2 1.2-1.3x faster than MatMul-only int8 on an AVX512-VNNI host, and costs fidelity that
differs per model. So the choice is measured, not assumed: every Attention goes to int8, the build's own fidelity
metrics (the task's, against the float graph, on calibration items) are checked against the recipe's gates, and
if they fail, the half with the largest measured int8 error (int8_fallback.rank_matmuls) returns to float, then
all of it. The held-out evaluation stays untouched: the validation gates judge the result as they judge any build.

NOTE: docs/decisions/0194-attention-int8-search.md has the measurements.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hfexport.backends._onnx.external import PROTOBUF_LIMIT, graph_bytes

# Calibration texts the check runs through both graphs, once one by one and once in padded batches.
ITEMS = 256
# NOTE: a calibration set's minimum overstates the held-out one (160 texts against 256, and the batch a text
# shares changes its int8 error): on all-MiniLM-L6-v2 the held-out min cosine sat up to 0.017 below the worst
# calibration min over batch sizes 1-32, for the MatMul-only default as for int8 attention. So a gate on a
# minimum (`*_min`) must hold with this to spare; means and agreements, stable statistics, hold as they are.
MIN_MARGIN = 0.02
# After SmoothQuant (smooth.py) the outliers that made that gap are gone: on all-MiniLM-L6-v2 with every Attention
# in int8 the worst held-out min over batch sizes 1-32 sat 0.0076 under the calibration min (decision 0196).
SMOOTHED_MIN_MARGIN = 0.01


@dataclass
class FidelityCheck:
    """What `auto` measures a candidate graph with: the task's comparable and gated metrics, on calibration
    feeds grouped in sets (batch 1, and padded batches as validation runs them: dynamic int8 quantises each
    batch over its padding too, so the batch changes the numbers)."""

    # each a list of feed dicts; or a function that makes them, called at the first measurement (a graph with no
    # fused Attention is never measured, and its build tokenises nothing for it)
    sets: list[list[dict]] | Callable[[], list[list[dict]]]
    comparable: Callable[[dict, dict], Any]  # (graph outputs by name, the feeds) -> what fidelity compares
    fidelity: Callable[[list, list], dict[str, float]]  # (reference, candidate) -> metrics
    thresholds: dict[str, float]  # the gates the build is judged by
    note: Callable[[str], None] = lambda _message: None  # the build's progress line, one per measured candidate
    min_margin: float = MIN_MARGIN  # what a gate on a minimum must hold to spare (SMOOTHED_MIN_MARGIN once smoothed)
    _reference: list | None = field(default=None, repr=False)

    def measure(self, graph: Path, reference: Path) -> tuple[bool, dict[str, float]]:
        """(every gate holds in every set, a minimum's with `min_margin` to spare; the worst of each metric)."""
        if self._reference is None:
            self._reference = self._outputs(reference)
        worst: dict[str, float] = {}
        for ref, cand in zip(self._reference, self._outputs(graph), strict=True):
            for metric, value in self.fidelity(ref, cand).items():
                if metric in self.thresholds:
                    worst[metric] = min(worst.get(metric, value), float(value))
        passed = all(worst.get(m, -np.inf) >= t + (self.min_margin if m.endswith("_min") else 0.0)
                     for m, t in self.thresholds.items())
        return passed, {m: round(v, 5) for m, v in worst.items()}

    def _outputs(self, path: Path) -> list[list]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name for i in session.get_inputs()}
        per_set = []
        if callable(self.sets):
            self.sets = self.sets()
        for feeds_list in self.sets:
            values = []
            for feeds in feeds_list:
                outputs = dict(zip(names, session.run(None, {k: v for k, v in feeds.items() if k in wanted}),
                                   strict=True))
                values.extend(self.comparable(outputs, feeds))
            per_set.append(values)
        return per_set


def attention_nodes(path: Path) -> list[str]:
    """Names of the fused Attention nodes ONNX Runtime's quantiser can turn into QAttention."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "Attention" and len(n.input) > 1 and n.input[1] in weights
            and not any(a.name == "qkv_hidden_sizes" for a in n.attribute)]


def choose(source: Path, out: Path, quantize: Callable[[Path, list[str]], None], check: FidelityCheck,
           ranked: list[tuple[str, float]]) -> dict:
    """Quantise `source` into `out` with as many Attention nodes in int8 as the gates allow.

    `quantize(path, float_attention)` writes an int8 graph with every Attention in int8 except those named;
    `ranked` lists (Attention name, measured int8 error), largest first. Returns the step's stats.
    """
    order = [name for name, _ in ranked]
    trials = []
    # Every Attention in int8, then the less sensitive half, then none: at most two measured candidates.
    steps = dict.fromkeys([0, len(order) // 2, len(order)])
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        for count in steps:
            floated = order[:count]
            if count == len(order):  # none left in int8: MatMul-only int8, which the validation gates judge
                quantize(out, floated)
                break
            candidate = Path(scratch) / f"try{count}.onnx"
            quantize(candidate, floated)
            passed, metrics = check.measure(candidate, source)
            trials.append({"attention_float": len(floated), "passed": passed, **metrics})
            measured = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            check.note(f"Attention in int8: {len(order) - count} of {len(order)}: {measured} on calibration text "
                       f"({'holds the gates' if passed else 'short of the gates'})")
            if passed:
                if graph_bytes(source) > PROTOBUF_LIMIT:  # its external data file is named after the graph
                    quantize(out, floated)
                else:
                    candidate.replace(out)
                break
    int8 = [name for name in order if name not in floated]
    return {"attention_int8": int8, "attention_float": floated, "attention_trials": trials}


def text_sets(texts: list[str], encode_batch: Callable[[list[str]], dict], batch: int) -> list[list[dict]]:
    """Calibration texts as feeds: one set one text at a time, one in padded batches of `batch`."""
    texts = list(texts)[:ITEMS]
    return [[encode_batch([text]) for text in texts],
            [encode_batch(texts[i:i + batch]) for i in range(0, len(texts), batch)]]
