"""matrix.html: every combination of a build matrix in one table, and speed against fidelity per target."""

from __future__ import annotations

from html import escape
from pathlib import Path

from hfexport.report.charts import Point, fidelity_range, scatter
from hfexport.report.html import PAGE_CSS


def render_matrix(outcomes, concurrent: int = 1, where: str = "") -> str:
    passed = sum(o.status == "passed" for o in outcomes)
    head = ["model", "target", "recipe", "result", "speed vs PyTorch", "size ratio", "fidelity", "seconds"]
    rows = []
    for o in outcomes:
        fid = fidelity_metric(o)
        cells = [o.combo.slug.split("--")[0], o.combo.target, _recipe(o), o.status + (f": {o.error}" if o.error else ""),
                 format_ratio(o.summary.get("speedup"), "x"), format_ratio(o.summary.get("size_ratio"), "x"),
                 f"{fid[0]} {fid[1]:.4f}" if fid else "–", f"{o.seconds:.0f}"]
        cls = "bundle" if o.status == "passed" else ""
        # The first four columns are words (left-aligned), the rest numbers.
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td class='text'>{escape(c)}</td>" if i < 4 else f"<td>{escape(c)}</td>"
                                                  for i, c in enumerate(cells)) + "</tr>")
    table = ("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    note = (f"Ran {where}." if where else "") + (f" {concurrent} builds ran at once and shared the host: speed figures "
                                                 "are indicative; fidelity does not depend on it." if concurrent > 1 else "")
    return "".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>hfexport build matrix</title>",
        f"<style>{PAGE_CSS}</style></head><body><main><h1>Build matrix</h1>",
        f"<p class='sub'>{passed} of {len(outcomes)} combinations passed their gates. {escape(note)}</p>",
        f"<h2>Combinations</h2><div class='wide'>{table}</div><h2>Speed against fidelity</h2>",
        "<div class='charts'>", *(f"<div class='chart'>{chart}</div>" for chart in _plots(outcomes)), "</div>",
        "</main></body></html>",
    ])


def _plots(outcomes) -> list[str]:
    """One scatter per target (and fidelity metric): speed vs PyTorch across, fidelity up."""
    groups: dict[tuple[str, str], list[Point]] = {}
    for o in outcomes:
        fid, speed = fidelity_metric(o), o.summary.get("speedup")
        if fid and isinstance(speed, (int, float)):
            role = "bundle" if o.status == "passed" else "reference"
            label = _recipe(o) + ("" if len({x.combo.model for x in outcomes}) == 1 else f" · {o.combo.slug.split('--')[0]}")
            groups.setdefault((o.combo.target, fid[0]), []).append(Point(label, speed, fid[1], role))
    charts = []
    for (target, metric), points in sorted(groups.items()):
        lo, hi = fidelity_range([p.y for p in points])
        charts.append(scatter(f"{target}: speed vs {metric.replace('_', ' ')}", "times faster than PyTorch",
                              metric.replace("_", " "), points, lo, hi,
                              subtitle="up and to the right is better · grey: failed a gate"))
    return charts or ["<p>no combination has both a speed and a fidelity figure</p>"]


def _recipe(outcome) -> str:
    return Path(outcome.combo.recipe).stem if outcome.combo.recipe else "default"


def fidelity_metric(outcome) -> tuple[str, float] | None:
    """The first gated metric of a combination and its value (what the plots put against speed)."""
    for gate in outcome.gates:
        if isinstance(gate, dict) and isinstance(gate.get("value"), (int, float)):
            return gate["metric"], float(gate["value"])
    return None


def format_ratio(value, unit: str = "x") -> str:
    return f"{value:.2f}{unit}" if isinstance(value, (int, float)) else "–"
