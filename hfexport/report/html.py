"""report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched) from a Report."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from hfexport.report.charts import Bar, Point, bar_chart, fidelity_range, scatter
from hfexport.report.schema import Report, StageMetrics

_REFERENCE, _BUNDLE = "pytorch", "bundle"
_RATIOS = ("speedup", "size_ratio")  # the summary keys that are not fidelity metrics
_MISSING = "–"

PAGE_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#22272e;margin:0;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:26px;margin:0 0 2px}h2{font-size:17px;margin:28px 0 10px}
.sub{color:#5b6470;margin:0 0 14px}.headline{font-size:21px;font-weight:600;margin:10px 0 4px}
.badge{display:inline-block;padding:3px 12px;border-radius:6px;font-weight:700;letter-spacing:.05em;font-size:14px}
h1 .badge{margin-left:12px;vertical-align:middle}
.pass{background:#e3f4e6;color:#1e6b34}.fail{background:#fbe5e5;color:#a52121}
table{border-collapse:collapse;background:#fff;border:1px solid #dfe3e8;font-variant-numeric:tabular-nums}
th,td{padding:6px 12px;border-bottom:1px solid #eceff2;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}th:first-child,th:last-child,td:first-child,td.text{text-align:left}
td.text{white-space:normal;max-width:340px;color:#5b6470}
tr.bundle td{background:#fdf3e9;font-weight:600}
tr.notes td{text-align:left;white-space:normal;color:#5b6470;font-size:12.5px;font-weight:400;padding-top:0}tr.reference td{color:#6b7380}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px}.wide{overflow-x:auto}
@media (max-width:900px){.charts{grid-template-columns:1fr}}
.chart{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:8px}
svg{display:block;width:100%;height:auto}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:#3a424c}
svg .title{font-size:15px;font-weight:600;fill:#22272e}svg .muted{fill:#6b7380;font-size:11.5px}
svg .strong{font-weight:700;fill:#22272e}svg .grid{stroke:#e6e9ed}svg .axis{stroke:#9aa2ac}
svg .ink{stroke:#3a424c;stroke-width:1.5}svg .leader{stroke:#9aa2ac}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}dt{color:#5b6470}dd{margin:0}
.note{color:#5b6470;margin-top:12px}
"""


def render_html(report: Report) -> str:
    """The whole report page as one string; it opens offline in any browser."""
    model_id, target = report.model.id, report.target
    facts = (report.model.task, target.name, target.isa, target.precision)
    badge = _badge(report.passed, "PASSED" if report.passed else "FAILED")
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>hfexport report · {escape(model_id)}</title><style>{PAGE_CSS}</style></head><body><main>",
            f"<h1>{escape(model_id)}{badge}</h1>",
            f"<p class='sub'>{escape(' · '.join(str(f) for f in facts if f))}</p>",
            f"<p class='headline'>{escape(_headline(report))}</p>",
            "<h2>Gates</h2>",
            _gates_table(report),
            "<h2>Stages</h2>",
            f"<div class='wide'>{_stages_table(report.stages, _inputs(report.model.task))}</div>",
            _task_metrics_table(report.stages),
            _compile_checks(report.compile_checks),
            "<h2>Plots</h2>",
            _charts(report.stages),
            "<h2>Host and evaluation</h2>",
            _facts(report),
            f"<p class='note'>Timings are medians over {report.evaluation.latency_runs} runs measured in one "
            "process, side by side; compare ratios, not absolute ms, across machines.</p>",
            "</main></body></html>\n",
        ]
    )


def _inputs(task: str) -> str:
    """What one input of the task is called in the report: texts, images or audio clips."""
    return "images" if task.startswith("image-") else "clips" if "speech" in task or "audio" in task else "texts"


def _compile_checks(checks: dict) -> str:
    """Compile-only checks (the TPU compile check): compiled or not per topology and shape, XLA's cost analysis.
    Stated as compile-only: no speed is claimed for hardware that did not run."""
    out = []
    for name, check in checks.items():
        rows = []
        for r in check.get("rows", []):
            ok = bool(r.get("compiled"))
            cells = [_td(str(r.get("topology", ""))), _td(str(r.get("batch", ""))), _td(str(r.get("sequence", ""))),
                     f"<td>{_badge(ok, 'yes' if ok else 'no')}</td>"]
            cells += [_td(_opt(r.get("flops") and r["flops"] / 1e9, ".2f")),
                      _td(_opt(r.get("bytes_accessed") and r["bytes_accessed"] / 1e6, ".1f")),
                      _td(_opt(r.get("memory_bytes") and r["memory_bytes"] / 1e6, ".1f")),
                      _td(r.get("error") or "", "text")]
            rows.append(("", cells))
        title = name.replace("_", " ").replace("tpu", "TPU")
        table = _table(["topology", "batch", "sequence", "compiled", "GFLOPs", "MB accessed", "memory MB", "error"],
                       rows) if rows else ""  # skipped (no libtpu): the note says so
        out.append(f"<h2>{escape(title[:1].upper() + title[1:])}</h2><p class='note'>{escape(check.get('note', ''))}</p>"
                   + table)
    return "".join(out)


def _headline(report: Report) -> str:
    parts = []
    speedup, size_ratio = (report.summary.get(k) for k in _RATIOS)
    if report.timing_warnings:
        parts.append(f"speed ratio unreliable: {'; '.join(report.timing_warnings)}")
    elif speedup:
        parts.append(f"{max(speedup, 1 / speedup):.1f}x {'faster' if speedup >= 1 else 'slower'} than PyTorch")
    if size_ratio is not None:
        parts.append(f"{size_ratio:.2f}x the size")
    bundle = next((s for s in report.stages if s.name == _BUNDLE), None)
    # Without a bundle stage the summary's own fidelity keys are the best headline there is.
    fidelity = bundle.fidelity if bundle else {k: v for k, v in report.summary.items() if k not in _RATIOS}
    return " · ".join(parts + _fidelity_phrases(fidelity))


def _fidelity_phrases(fidelity: dict[str, float]) -> list[str]:
    # `<m>_mean` and `<m>_min` read best together: "cosine mean 0.9950 (min 0.9812)".
    phrases = []
    for key, value in fidelity.items():
        base, _, stat = key.rpartition("_")
        if stat == "min" and f"{base}_mean" in fidelity:
            continue
        text = f"{key.replace('_', ' ')} {_num(value)}"
        if stat == "mean" and f"{base}_min" in fidelity:
            text += f" (min {_num(fidelity[f'{base}_min'])})"
        phrases.append(text)
    return phrases


def _num(value: float) -> str:
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"


def _opt(value: float | None, spec: str) -> str:
    return _MISSING if value is None else format(value, spec)


def _role(stage: StageMetrics) -> str:
    return {_REFERENCE: "reference", _BUNDLE: "bundle"}.get(stage.name, "stage")


def _fidelity_keys(stages: Iterable[StageMetrics]) -> list[str]:
    return list(dict.fromkeys(key for stage in stages for key in stage.fidelity))


def _badge(passed: bool, text: str) -> str:
    return f"<span class='badge {'pass' if passed else 'fail'}'>{escape(text)}</span>"


def _td(text: str, cls: str = "") -> str:
    return f"<td class='{cls}'>{escape(text)}</td>" if cls else f"<td>{escape(text)}</td>"


def _table(head: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """`rows` hold (row class, cells already rendered by `_td`)."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(f"<tr class='{cls}'>{''.join(cells)}</tr>" for cls, cells in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _gates_table(report: Report) -> str:
    if not report.gates:
        return "<p class='sub'>No gates were set.</p>"
    rows = []
    for gate in report.gates:
        badge = _badge(gate.passed, "pass" if gate.passed else "FAIL")
        cells = [_td(gate.metric), _td(_num(gate.value)), _td(_num(gate.threshold)), f"<td>{badge}</td>"]
        rows.append(("", cells))
    return _table(["metric", "value", "threshold", "result"], rows)


def _stages_table(stages: list[StageMetrics], inputs: str = "texts") -> str:
    metrics = _fidelity_keys(stages)
    # Text generation: latency is the time to first token and throughput is decode tokens/s.
    generative = any(s.generation for s in stages)
    timing = (["TTFT p50 ms", "TTFT p90 ms", "decode tok/s", "prefill tok/s"] if generative
              else ["p50 ms", "p90 ms", f"{inputs}/s"])
    head = [
        "stage",
        "size MB",
        "pass time s",
        *timing,
        "peak RSS MB",
        *metrics,
    ]
    rows = []
    for s in stages:
        p50, p90 = (s.latency.p50_ms, s.latency.p90_ms) if s.latency else (None, None)
        cells = [_td(s.name), _td(f"{s.size_bytes / 1e6:.1f}"), _td(_opt(s.pass_seconds, ".1f"))]
        cells += [_td(_opt(p50, ".2f")), _td(_opt(p90, ".2f")), _td(_opt(s.throughput_per_s, ".1f"))]
        if generative:
            cells += [_td(_opt(s.generation.get("prefill_tokens_per_s"), ".0f"))]
        cells += [_td(_opt(s.peak_rss_mb, ".0f"))]
        cells += [_td(_num(s.fidelity[m]) if m in s.fidelity else _MISSING) for m in metrics]
        rows.append((_role(s), cells))
        if s.notes:  # a full-width row under the stage: long notes wrap instead of widening the table
            rows.append((f"notes {_role(s)}", [f"<td colspan='{len(head)}'>{escape('; '.join(s.notes))}</td>"]))
    return _table(head, rows)


def _task_metrics_table(stages: list[StageMetrics]) -> str:
    """Reference and bundle side by side on labelled data; absent when no labels were given."""
    labelled = [s for s in stages if s.task_metrics]
    if not labelled:
        return ""
    metrics = list(dict.fromkeys(key for s in labelled for key in s.task_metrics))
    rows = [(_role(s), [_td(s.name), *[_td(_num(s.task_metrics[m]) if m in s.task_metrics else _MISSING)
                                       for m in metrics]]) for s in labelled]
    return "<h2>Task metrics on labelled data</h2>" + _table(["stage", *metrics], rows)


def _facts(report: Report) -> str:
    host, ev, target = dict(report.host), report.evaluation, report.target
    items: list[tuple[str, object]] = [("CPU", host.pop("cpu", None)), ("ISAs", host.pop("isas", None))]
    items += [("logical CPUs", host.pop("logical_cpus", None)), ("threads", ev.threads)]
    # Whatever else the host carries (runtime versions, platform) is shown as it came.
    items += [(key.replace("_", " "), value) for key, value in host.items()]
    target_text = " · ".join(str(v) for v in (target.name, target.backend, target.isa, target.precision) if v)
    items += [("target", target_text), ("execution providers", target.execution_providers)]
    # What the backend chose at load time (OpenVINO: device, inference precision, streams).
    items += [("runtime", target.runtime)]
    inputs = _inputs(report.model.task)
    length = ("sequence length", ev.sequence_length) if inputs == "texts" else ("", None)  # images: fixed size
    items += [("samples", ev.samples), length, ("batch size", ev.batch_size)]
    items += [("timed runs", ev.latency_runs), (f"{inputs[:-1]} source", ev.text_source)]
    items += [(f"bundle on {source}", metrics) for source, metrics in report.other_fidelity.items()]
    items += [("model revision", report.model.revision), ("created", report.created)]
    items += [("signed by", f"{report.signed_by} (hfexport verify BUNDLE --public-key KEY.pub)" if report.signed_by
               else "not signed at build time")]
    shown = [(k, v) for k, v in items if v not in (None, "", [])]
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(_plain(v))}</dd>" for k, v in shown) + "</dl>"


def _plain(value: object) -> str:
    if isinstance(value, dict):
        return " · ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _charts(stages: list[StageMetrics]) -> str:
    metric = next(iter(_fidelity_keys(stages)), None)
    name = (metric or "fidelity").replace("_", " ")
    latency, fidelity, sizes, points = [], [], [], []
    for s in stages:
        role, mb = _role(s), s.size_bytes / 1e6
        sizes.append(Bar(s.name, mb, f"{mb:.1f} MB", role))
        if metric in s.fidelity:
            fidelity.append(Bar(s.name, s.fidelity[metric], _num(s.fidelity[metric]), role))
        if s.latency:
            p50, p90 = s.latency.p50_ms, s.latency.p90_ms
            latency.append(Bar(s.name, p50, f"{p50:.2f} ms (p90 {p90:.2f})", role, p90))
            # The reference agrees with itself, so it sits at 1.0 unless the report says otherwise.
            y = s.fidelity.get(metric, 1.0 if s.name == _REFERENCE else None) if metric else None
            if y is not None:
                points.append(Point(s.name, p50, y, role))
    lo, hi = fidelity_range([b.value for b in fidelity] + [p.y for p in points])
    # Text generation reports the time to first token as its latency.
    latency_name = "Time to first token" if any(s.generation for s in stages) else "Latency"
    zoomed = f"axis {_num(lo)} – {_num(hi)}, zoomed so small differences show · higher is better"
    zoom = zoomed if lo > 0 else f"axis {_num(lo)} – {_num(hi)}"
    charts = [
        bar_chart(f"{latency_name} per stage", "ms, batch 1", latency, "bar = p50, whisker = p90 · lower is better"),
        bar_chart(f"Fidelity per stage: {name}", name, fidelity, zoom, lo, hi),
        bar_chart("Size per stage", "megabytes on disk", sizes, "lower is better"),
        scatter(f"{latency_name} vs {name}", "p50 latency, ms", name, points, lo, hi),
    ]
    return "<div class='charts'>" + "".join(f"<div class='chart'>{c}</div>" for c in charts) + "</div>"


