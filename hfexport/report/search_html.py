"""search.html: every `--recipe auto` candidate, the measured speed/fidelity front, and the one chosen."""

from __future__ import annotations

from html import escape

from hfexport.report.charts import Point, fidelity_range, scatter
from hfexport.report.html import PAGE_CSS


def render_search(candidates, best, where: str, warnings: list[str] | None = None) -> str:
    timed = [c for c in candidates if c.latency_ms is not None and c.fidelity]
    metric = timed[0].fidelity[0] if timed else "fidelity"
    points = [Point(c.name + (" (chosen)" if c is best else ""), c.latency_ms, c.fidelity[1],
                    "bundle" if c.on_front else "stage") for c in timed]
    lo, hi = fidelity_range([p.y for p in points])
    chart = scatter(f"Candidates: batch-1 latency vs {metric.replace('_', ' ')}", "p50 latency, ms (side by side)",
                    metric.replace("_", " "), points, lo, hi,
                    subtitle="orange: on the front (nothing faster is as faithful) · up and to the left is better")
    head = ["candidate", "result", "p50 ms", metric, "on the front"]
    rows = []
    for c in sorted(candidates, key=lambda c: (c.latency_ms is None, c.latency_ms or 0)):
        cells = [c.name + (" (chosen)" if c is best else ""), c.status + (f": {c.error}" if c.error else ""),
                 f"{c.latency_ms:.2f}" if c.latency_ms is not None else "–",
                 f"{c.fidelity[1]:.4f}" if c.fidelity else "–", "yes" if c.on_front else ""]
        cls = "bundle" if c is best else ""
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td class='text'>{escape(x)}</td>" if i < 2
                                                    else f"<td>{escape(x)}</td>" for i, x in enumerate(cells)) + "</tr>")
    table = ("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    front = sum(c.on_front for c in candidates)
    return "".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>hfexport --recipe auto</title>",
        f"<style>{PAGE_CSS}</style></head><body><main><h1>--recipe auto: {escape(best.name)}</h1>",
        f"<p class='sub'>{len(candidates)} candidates built {escape(where)}; {len(timed)} passed the gates and were "
        f"timed side by side in one process; {front} on the front. The fastest that passed was installed.</p>",
        *(f"<p class='note'>Timing: {escape(w)} (the ranking holds better than the milliseconds).</p>"
          for w in warnings or []),
        f"<div class='charts'><div class='chart'>{chart}</div></div><h2>Candidates</h2>",
        f"<div class='wide'>{table}</div></main></body></html>",
    ])
