"""The validation report: a typed, versioned report.json and a self-contained report.html."""

from hfexport.report.schema import REPORT_VERSION, GateResult, Report, StageMetrics

__all__ = ["REPORT_VERSION", "GateResult", "Report", "StageMetrics"]
