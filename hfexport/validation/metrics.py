"""Gates (the task's thresholds, with the recipe's values) judged on the bundle, and the report they go in."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from hfexport.errors import FidelityError
from hfexport.report.schema import Evaluation, GateResult, Report, StageMetrics
from hfexport.tasks import get_task


def check_gates(task: str, overrides: dict[str, float | None], measured: dict[str, float]) -> list[GateResult]:
    thresholds = get_task(task).thresholds(overrides)
    return [GateResult(metric=m, value=measured[m], threshold=t, passed=measured[m] >= t)
            for m, t in thresholds.items() if m in measured]


def worst_fidelity(task: str, batched: dict[str, float], alone: dict[str, float]) -> dict[str, float]:
    """The fidelity the gates judge: per gated metric (all higher-is-better) the worse of the evaluation batch and
    one input at a time; other metrics as the evaluation batch measured them."""
    gated = get_task(task).gate_metrics
    return {m: min(v, alone[m]) if m in gated and m in alone else v for m, v in batched.items()}


def gate_failure(gates: list[GateResult], report_dir: Path | None) -> FidelityError | None:
    failed = [g for g in gates if not g.passed]
    if not failed:
        return None
    parts = ", ".join(f"{g.metric} {g.value:.4f} < {g.threshold:.4f}" for g in failed)
    where = f"; report kept in {report_dir}" if report_dir else ""
    return FidelityError(f"fidelity gate failed: {parts}{where}", [g.model_dump() for g in failed],
                         str(report_dir) if report_dir else None)


def judged_report(judging, task: str, stages: list[StageMetrics], evaluation: Evaluation, speedup: float,
                  timing_warnings: list[str] | None = None) -> Report:
    """The report of one validation: gates judged on the last stage (the bundle), the headline summary."""
    from hfexport import host
    from hfexport.validation.timing import quick_validation_note

    final = stages[-1]
    if (note := quick_validation_note(judging.settings)) is not None:  # --validation quick: never a benchmark
        timing_warnings = [note, *(timing_warnings or [])]
    judged = worst_fidelity(task, final.fidelity, final.fidelity_batch1)
    gates = check_gates(task, judging.gates, judged)
    summary = {"speedup": speedup, "throughput_ratio": final.throughput_per_s / stages[0].throughput_per_s,
               "size_ratio": final.size_bytes / max(judging.reference_size, 1), **judged}
    return Report(created=datetime.now(timezone.utc).isoformat(timespec="seconds"), model=judging.model_info,
                  target=judging.target_info, host={**host.host_summary(), "versions": judging.versions},
                  evaluation=evaluation, stages=stages, gates=gates, passed=all(g.passed for g in gates),
                  summary=summary, timing_warnings=timing_warnings or [])
