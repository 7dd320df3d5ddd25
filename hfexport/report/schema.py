"""report.json schema (versioned). Plain data: the HTML page and `hfexport inspect` read it back."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPORT_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Model):
    p50_ms: float
    p90_ms: float
    runs: int


class StageMetrics(_Model):
    """One row of the report: the reference, an intermediate artifact, or the final bundle."""

    name: str  # "pytorch", "export_onnx", "optimize", "quantize", "bundle"
    kind: str  # the artifact kind ("torch", "onnx", "openvino", ...) or "bundle" for the final, loaded bundle
    size_bytes: int
    pass_seconds: float | None = None  # wall time of the pass that produced this stage
    latency: Latency | None = None  # batch 1, text in -> result out, tokenisation included
    throughput_per_s: float | None = None  # texts per second at the evaluation batch size
    fidelity: dict[str, float] = Field(default_factory=dict)  # metric -> value, vs the pytorch reference
    # The final bundle's fidelity with every input run on its own, when the evaluation batch is larger: dynamic
    # int8 quantises a whole batch over one range, so the batch changes the numbers; gates judge the worse.
    fidelity_batch1: dict[str, float] = Field(default_factory=dict)
    # Task metrics on labelled evaluation data (accuracy, F1, Spearman, exact match), when labels were given.
    task_metrics: dict[str, float] = Field(default_factory=dict)
    peak_rss_mb: float | None = None
    # text generation only: time_to_first_token_ms, prefill_tokens_per_s, decode_tokens_per_s, new_tokens
    generation: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class GateResult(_Model):
    metric: str
    value: float
    threshold: float
    passed: bool


class Evaluation(_Model):
    samples: int
    sequence_length: int
    batch_size: int
    latency_runs: int
    threads: int
    text_source: str
    labelled_examples: int = 0


class _Section(_Model):
    """Dict-style reads (`report.target["name"]`, `.get(...)`) as the free dicts of before allowed; kept for
    one release with a DeprecationWarning."""

    def __getitem__(self, key: str):
        if key not in type(self).model_fields and key not in (self.model_extra or {}):
            raise KeyError(key)
        warnings.warn(f"report section[{key!r}] is deprecated: the report is typed, read it as .{key}",
                      DeprecationWarning, stacklevel=2)
        return getattr(self, key)

    def get(self, key: str, default=None):
        if key not in type(self).model_fields and key not in (self.model_extra or {}):
            return default
        warnings.warn(f"report section.get({key!r}) is deprecated: the report is typed, read it as .{key}",
                      DeprecationWarning, stacklevel=2)
        return getattr(self, key)


class ReportModel(_Section):
    id: str
    revision: str | None = None
    task: str


class ReportTarget(_Section):
    name: str
    backend: str
    isa: str | None = None
    precision: str
    execution_providers: list[str] = Field(default_factory=list)
    # What the backend chose at load time (OpenVINO: device, inference precision, streams; ONNX Runtime on a
    # host without the bundle's provider: the providers it ran on and the one asked for), when it says.
    runtime: dict[str, Any] | None = None


class ReportHost(_Section):
    """The host that ran the validation (hfexport.host.host_summary() and the tool versions); other facts a
    caller adds are kept as they came."""

    model_config = ConfigDict(extra="allow")

    cpu: str | None = None
    machine: str | None = None
    isas: list[str] = Field(default_factory=list)
    logical_cpus: int | None = None
    python: str | None = None
    platform: str | None = None
    versions: dict[str, str] | None = None


class Report(_Model):
    report_version: Literal[1] = REPORT_VERSION
    created: str
    model: ReportModel
    target: ReportTarget
    host: ReportHost
    evaluation: Evaluation
    stages: list[StageMetrics]
    gates: list[GateResult]
    passed: bool
    summary: dict[str, float]  # speedup, size_ratio and the headline fidelity metrics of the bundle
    # The bundle's fidelity on other text, by source, beside the gated one (a distilled student judged on a
    # held-out split of its training text also shows the shipped everyday-English set here).
    other_fidelity: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Why the speed figures should not be read as results (a busy host, noisy calls); empty when none.
    timing_warnings: list[str] = Field(default_factory=list)
    # Compile-only checks for hardware the build host does not have (the tpu target's TPU compile check:
    # {"note", "rows": [{topology, batch, sequence, compiled, flops, bytes_accessed, memory_bytes | error}]}).
    compile_checks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The signer the build signed the bundle as (`--sign-with`: "key sha256:<16 hex>"), or None when unsigned.
    signed_by: str | None = None

    def speed_phrase(self, versus: str = "") -> str:
        """"3.20x faster" — or, when the timing was disturbed, why no ratio is given."""
        if self.timing_warnings:
            return f"speed ratio unreliable ({self.timing_warnings[0]})"
        return f"{self.summary['speedup']:.2f}x faster{versus}"

    def stage(self, name: str) -> StageMetrics:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)
