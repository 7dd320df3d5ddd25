"""Gates: the task's thresholds, with the recipe's values, judged on the bundle's fidelity."""

from __future__ import annotations

from pathlib import Path

from hfexport.errors import FidelityError
from hfexport.report.schema import GateResult
from hfexport.tasks import get_task


def check_gates(task: str, overrides: dict[str, float | None], measured: dict[str, float]) -> list[GateResult]:
    thresholds = get_task(task).thresholds(overrides)
    return [GateResult(metric=m, value=measured[m], threshold=t, passed=measured[m] >= t)
            for m, t in thresholds.items() if m in measured]


def gate_failure(gates: list[GateResult], report_dir: Path | None) -> FidelityError | None:
    failed = [g for g in gates if not g.passed]
    if not failed:
        return None
    parts = ", ".join(f"{g.metric} {g.value:.4f} < {g.threshold:.4f}" for g in failed)
    where = f"; report kept in {report_dir}" if report_dir else ""
    return FidelityError(f"fidelity gate failed: {parts}{where}", [g.model_dump() for g in failed],
                         str(report_dir) if report_dir else None)
