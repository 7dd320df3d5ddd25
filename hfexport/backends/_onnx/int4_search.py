"""Which weight matrices can stay int4: a sensitivity search on calibration text (`int4_top1_target`).

When a model's next-token margins are smaller than the logit noise int4 rounding adds, int4 everywhere flips
argmaxes; llama.cpp's Q4_K_M answers that by keeping some tensors above 4 bits. Here which ones is measured,
on the graph being quantised, against its own float output:

1. sensitivity: each int4 candidate alone in int4 (every other weight float), the mean squared logit error on
   the calibration windows;
2. order: that error per parameter, least first (the file bytes int4 saves over int8 grow with the parameter
   count, so this is error per byte saved);
3. budget: candidates are taken in that order, skipping any that would overflow a budget on the summed error
   (errors of independent roundings add, nearly); the budget is the largest, found by bisection, whose mixed
   graph (chosen ones int4, the rest int8) keeps top-1 agreement with the float graph >= the target on the
   calibration windows.
   That agreement is measured, not predicted.

The probe is the float graph with the candidate weights turned into graph inputs, so one session serves every
trial, each fed the weights dequantised exactly as MatMulNBits / GatherBlockQuantized will compute with them.
It computes in float: the kernels' int8 rounding of activations (accuracy_level 4) is not part of the search,
so the target needs headroom over the recipe's gate. Cost: one forward pass over the calibration windows per
candidate, plus about 8; each candidate is quantised twice (int4, int8) and kept as uint8 codes (a quarter of
its float bytes each) for the search's length, dequantised again for each trial.

Memory (docs/decisions/0183-models-past-2gb.md): the search reads the graph without its external weights and
memory-maps them; the probe holds only the weights that are not candidates. The float originals are dropped
once every candidate's sensitivity is known, so a mixed trial holds the codes and one dequantised set.

NOTE: why a measured split, and the numbers behind the 0.93 default: docs/decisions/0048-int4-int8-split-search.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hfexport.backends._onnx.blocks import Rounded, WeightMatrix, rounded
from hfexport.backends._onnx.external import PROTOBUF_LIMIT
from hfexport.errors import ExportError
from hfexport.runtime.backends.onnxruntime import fused_feeds

_BATCH = 4  # windows per probe call: bounds the [batch, tokens, vocab] logits held at once


@dataclass(frozen=True)
class SearchSettings:
    windows: list[list[int]]  # calibration token windows, teacher-forced
    target: float  # top-1 agreement with the float graph the mix must keep
    threads: int = 0


@dataclass
class SearchResult:
    int4: list[str]
    int8: list[str]
    target: float
    calibration_top1: float  # the chosen mix, on the float probe
    int8_only_top1: float  # every candidate int8: the floor the search cannot go under
    sensitivity: dict[str, float] = field(default_factory=dict)  # node -> logit MSE with it alone in int4
    trials: int = 0
    seconds: float = 0.0
    positions: int = 0

    def stats(self) -> dict:
        worst = sorted(self.sensitivity, key=self.sensitivity.get, reverse=True)[:3]
        return {"int4_top1_target": self.target, "calibration_top1": round(self.calibration_top1, 4),
                "int8_only_calibration_top1": round(self.int8_only_top1, 4), "search_trials": self.trials,
                "search_seconds": round(self.seconds, 2), "calibration_positions": self.positions,
                "most_sensitive": {n: float(f"{self.sensitivity[n]:.3g}") for n in worst}}


def search_int4(model, candidates: list[WeightMatrix], settings: SearchSettings, *, group_size: int,
                folder: Path | None = None, symmetric: bool = False) -> SearchResult:
    """`model`: the graph, its external weights (if any) not loaded; `folder`: where they are; `symmetric`: the
    MatMul weights are rounded as `_apply` will (no zero points)."""
    started = time.perf_counter()
    if not candidates:
        return SearchResult([], [], settings.target, 1.0, 1.0)
    probe = _Probe(model, candidates, settings, folder or Path("."))
    # Each matrix's int4 and int8 versions are quantised once, not once per trial, and kept as codes.
    codes: dict[tuple[str, str], Rounded] = {}

    def version(m: WeightMatrix, precision: str) -> np.ndarray:
        if (m.weight, precision) not in codes:
            codes[m.weight, precision] = rounded(probe.weights[m.weight], m, precision, group_size, symmetric)
        return codes[m.weight, precision].values()

    def trial(int4: set[str]) -> tuple[float, float]:
        return probe.compare({m.weight: version(m, "int4" if m.node in int4 else "int8") for m in candidates})

    def single(m: WeightMatrix) -> float:
        version(m, "int8")  # while the float original is at hand
        return probe.compare({m.weight: version(m, "int4")})[0]

    sensitivity = {m.node: single(m) for m in candidates}
    probe.drop_weights()  # every trial from here feeds codes only
    trials = len(candidates)
    everything = {m.node for m in candidates}
    _, all_int4 = trial(everything)
    _, floor = trial(set())
    trials += 2
    if all_int4 >= settings.target:
        chosen, top1 = everything, all_int4
    elif floor < settings.target:
        chosen, top1 = set(), floor  # int8 everywhere already misses it: no int4 can help
    else:
        order = sorted(candidates, key=lambda m: (sensitivity[m.node] / m.params, m.node))
        known = {frozenset(everything): all_int4, frozenset(): floor}
        chosen, top1, searched = _bisect_budget(order, sensitivity, trial, known, settings.target)
        trials += searched
    return SearchResult(int4=[m.node for m in candidates if m.node in chosen],
                        int8=[m.node for m in candidates if m.node not in chosen], target=settings.target,
                        calibration_top1=top1, int8_only_top1=floor, sensitivity=sensitivity, trials=trials,
                        seconds=time.perf_counter() - started, positions=probe.positions)


def _bisect_budget(order, sensitivity, trial, known: dict[frozenset, float], target: float
                   ) -> tuple[set[str], float, int]:
    """The largest error budget whose greedy pick keeps the target: (picked nodes, its top-1, trials run)."""

    def pick(budget: float) -> frozenset[str]:
        total, picked = 0.0, set()
        for m in order:
            if total + sensitivity[m.node] <= budget:
                total += sensitivity[m.node]
                picked.add(m.node)
        return frozenset(picked)

    errors = [sensitivity[m.node] for m in order]
    # Budgets from the whole sum (everything int4, known to miss) down to 0 (nothing int4, known to pass),
    # a factor sqrt(2) apart below the sum.
    smallest = min((e for e in errors if e > 0), default=0.0)
    budgets, value = [], sum(errors)
    while value > 0 and value >= smallest / 2:
        budgets.append(value)
        value /= np.sqrt(2)
    budgets.append(0.0)
    results = dict(known)
    trials = 0

    def top1(index: int) -> float:
        nonlocal trials
        picked = pick(budgets[index])
        if picked not in results:
            results[picked] = trial(set(picked))[1]
            trials += 1
        return results[picked]

    low, high = 0, len(budgets) - 1  # low misses, high passes
    while high - low > 1:
        middle = (low + high) // 2
        if top1(middle) >= target:
            high = middle
        else:
            low = middle
    return set(pick(budgets[high])), top1(high), trials


class _Probe:
    """The float graph with the candidates' weights as inputs, and its reference logits."""

    def __init__(self, model, candidates: list[WeightMatrix], settings: SearchSettings, folder: Path):
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        from hfexport.backends._onnx.external import external_info, weight_array

        # The probe is built from the graph's metadata, not a copy of the model: initializers are added one by one,
        # each external one that stays in the graph read from its file (the candidates become inputs instead).
        probe = onnx.ModelProto()
        for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
            setattr(probe, name, getattr(model, name))
        probe.opset_import.extend(model.opset_import)
        source = model.graph
        for name in ("node", "input", "output", "value_info", "sparse_initializer"):
            getattr(probe.graph, name).extend(getattr(source, name))
        probe.graph.name = source.name
        names = {m.weight for m in candidates}
        listed = {value.name for value in probe.graph.input}  # old IRs list initializers as inputs too
        self.weights: dict[str, np.ndarray] = {}
        for init in source.initializer:
            if init.name in names:
                self.weights[init.name] = weight_array(init, folder)
                if init.name not in listed:
                    probe.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
            elif external_info(init) is not None:
                probe.graph.initializer.append(numpy_helper.from_array(np.asarray(weight_array(init, folder)),
                                                                       init.name))
            else:
                probe.graph.initializer.append(init)
        if probe.ByteSize() > PROTOBUF_LIMIT:
            raise ExportError("int4_top1_target: the graph without its quantisable weights is still over 2 GB, "
                              "which the sensitivity search cannot open; drop int4_top1_target")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        serialized = probe.SerializeToString()
        del probe
        self.session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
        del serialized
        self.batches = [self._feeds(settings.windows[i:i + _BATCH]) for i in range(0, len(settings.windows), _BATCH)]
        self.reference = [self._logits(feeds, {}) for feeds in self.batches]
        self.positions = sum(r.shape[0] * r.shape[1] for r in self.reference)

    def drop_weights(self) -> None:
        """Forget the float originals (memory-mapped pages go back to the kernel); every later `compare` must
        feed every candidate."""
        self.weights = dict.fromkeys(self.weights)

    def _feeds(self, windows: list[list[int]]) -> dict[str, np.ndarray]:
        """A prefill of whole windows: no padding, positions from 0, an empty past."""
        ids = np.asarray(windows, np.int64)
        known = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "position_ids": np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy(),
                 "logits_to_keep": np.array(0, np.int64),  # every position's logits (a graph that has the input)
                 **fused_feeds(np.ones_like(ids), ids.shape[1], all_logits=True)}  # a fused graph's (0199)
        feeds = {}
        for value in self.session.get_inputs():
            if value.name in known:
                feeds[value.name] = known[value.name]
            elif value.name.startswith("past_key_values."):
                heads, head_dim = value.shape[1], value.shape[3]
                if not isinstance(heads, int) or not isinstance(head_dim, int):
                    raise ExportError(f"int4_top1_target: {value.name} has no static head sizes ({value.shape})")
                feeds[value.name] = np.zeros((ids.shape[0], heads, 0, head_dim), np.float32)
            elif value.name not in self.weights:
                raise ExportError(f"int4_top1_target: cannot feed graph input {value.name!r} (the search runs "
                                  "text-generation graphs from the export step)")
        return feeds

    def _logits(self, feeds: dict, weights: dict[str, np.ndarray]) -> np.ndarray:
        full = {**feeds, **{name: weights[name] if name in weights else np.ascontiguousarray(value)
                            for name, value in self.weights.items()}}
        return self.session.run(["logits"], full)[0]

    def compare(self, weights: dict[str, np.ndarray]) -> tuple[float, float]:
        """(mean squared logit error, top-1 agreement) against the float graph, with `weights` swapped in."""
        squared, agree = 0.0, 0
        for feeds, reference in zip(self.batches, self.reference):
            logits = self._logits(feeds, weights)
            squared += float(np.square(logits - reference, dtype=np.float64).mean()) * reference[..., 0].size
            agree += int((logits.argmax(-1) == reference.argmax(-1)).sum())
        return squared / self.positions, agree / self.positions
