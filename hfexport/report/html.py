"""report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched) from a Report."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape

from hfexport.report.schema import Report, StageMetrics

_REFERENCE, _BUNDLE = "pytorch", "bundle"
_RATIOS = ("speedup", "size_ratio")  # the summary keys that are not fidelity metrics
_COLOURS = {"reference": "#b3b8be", "stage": "#9cbad3", "bundle": "#d9822b"}
_MISSING = "–"
# NOTE: SVG cannot measure text without a browser; this average glyph width at 12px keeps the label
# column and the value labels clear of the bars and of each other.
_CHAR_W = 7.0
_WIDTH = 600
_Box = tuple[float, float, float, float]

_CSS = """
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
tr.bundle td{background:#fdf3e9;font-weight:600}tr.reference td{color:#6b7380}
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


@dataclass(frozen=True)
class _Bar:
    label: str
    value: float
    text: str  # the value label drawn after the bar
    role: str  # "reference", "stage" or "bundle": picks the colour
    whisker: float | None = None


@dataclass(frozen=True)
class _Point:
    label: str
    x: float
    y: float
    role: str


def render_html(report: Report) -> str:
    """The whole report page as one string; it opens offline in any browser."""
    model_id, target = report.model.id, report.target
    facts = (report.model.task, target.name, target.isa, target.precision)
    badge = _badge(report.passed, "PASSED" if report.passed else "FAILED")
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>hfexport report · {escape(model_id)}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>{escape(model_id)}{badge}</h1>",
            f"<p class='sub'>{escape(' · '.join(str(f) for f in facts if f))}</p>",
            f"<p class='headline'>{escape(_headline(report))}</p>",
            "<h2>Gates</h2>",
            _gates_table(report),
            "<h2>Stages</h2>",
            f"<div class='wide'>{_stages_table(report.stages)}</div>",
            _task_metrics_table(report.stages),
            "<h2>Plots</h2>",
            _charts(report.stages),
            "<h2>Host and evaluation</h2>",
            _facts(report),
            f"<p class='note'>Timings are medians over {report.evaluation.latency_runs} runs measured in one "
            "process, side by side; compare ratios, not absolute ms, across machines.</p>",
            "</main></body></html>\n",
        ]
    )


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


def _stages_table(stages: list[StageMetrics]) -> str:
    metrics = _fidelity_keys(stages)
    # Text generation: latency is the time to first token and throughput is decode tokens/s.
    generative = any(s.generation for s in stages)
    timing = (["TTFT p50 ms", "TTFT p90 ms", "decode tok/s", "prefill tok/s"] if generative
              else ["p50 ms", "p90 ms", "texts/s"])
    head = [
        "stage",
        "size MB",
        "pass time s",
        *timing,
        "peak RSS MB",
        *metrics,
        "notes",
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
        rows.append((_role(s), [*cells, _td("; ".join(s.notes) or _MISSING, "text")]))
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
    items += [("samples", ev.samples), ("sequence length", ev.sequence_length), ("batch size", ev.batch_size)]
    items += [("timed runs", ev.latency_runs), ("text source", ev.text_source)]
    items += [(f"bundle on {source}", metrics) for source, metrics in report.other_fidelity.items()]
    items += [("model revision", report.model.revision), ("created", report.created)]
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
        sizes.append(_Bar(s.name, mb, f"{mb:.1f} MB", role))
        if metric in s.fidelity:
            fidelity.append(_Bar(s.name, s.fidelity[metric], _num(s.fidelity[metric]), role))
        if s.latency:
            p50, p90 = s.latency.p50_ms, s.latency.p90_ms
            latency.append(_Bar(s.name, p50, f"{p50:.2f} ms (p90 {p90:.2f})", role, p90))
            # The reference agrees with itself, so it sits at 1.0 unless the report says otherwise.
            y = s.fidelity.get(metric, 1.0 if s.name == _REFERENCE else None) if metric else None
            if y is not None:
                points.append(_Point(s.name, p50, y, role))
    lo, hi = _fidelity_range([b.value for b in fidelity] + [p.y for p in points])
    # Text generation reports the time to first token as its latency.
    latency_name = "Time to first token" if any(s.generation for s in stages) else "Latency"
    zoomed = f"axis {_num(lo)} – {_num(hi)}, zoomed so small differences show · higher is better"
    zoom = zoomed if lo > 0 else f"axis {_num(lo)} – {_num(hi)}"
    charts = [
        _bar_chart(f"{latency_name} per stage", "ms, batch 1", latency, "bar = p50, whisker = p90 · lower is better"),
        _bar_chart(f"Fidelity per stage: {name}", name, fidelity, zoom, lo, hi),
        _bar_chart("Size per stage", "megabytes on disk", sizes, "lower is better"),
        _scatter(f"{latency_name} vs {name}", "p50 latency, ms", name, points, lo, hi),
    ]
    return "<div class='charts'>" + "".join(f"<div class='chart'>{c}</div>" for c in charts) + "</div>"


def _fidelity_range(values: list[float]) -> tuple[float, float]:
    # Similarity-style metrics cluster just under 1.0; drawn from zero, every bar would look the same.
    if not values or max(values) > 1 or min(values) < 0.5:
        return min([0.0, *values]), max(values, default=1.0) or 1.0
    ticks = _ticks(min(values) - max((1 - min(values)) * 0.25, 5e-4), 1.0)
    return ticks[0], ticks[-1]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering lo..hi."""
    hi = hi if hi > lo else lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * 0.999)
    start = math.floor(lo / step + 1e-9) * step
    return [start + i * step for i in range(math.ceil((hi - start) / step - 1e-9) + 1)]


def _tick_text(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return f"{value:.{max(0, -math.floor(math.log10(step) + 1e-9))}f}"


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start", extra: str = "") -> str:
    attrs = (f" class='{cls}'" if cls else "") + (f" text-anchor='{anchor}'" if anchor != "start" else "")
    return f"<text x='{x:.1f}' y='{y:.1f}'{attrs}{extra}>{escape(text)}</text>"


def _line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' class='{cls}'/>"


def _grid(
    ticks: list[float], to_px: Callable[[float], float], span: tuple[float, float], vertical: bool
) -> list[str]:
    """Grid lines across the plot, with tick labels below it (vertical lines) or to its left."""
    a, b = span
    out = []
    for tick in ticks:
        at, label = to_px(tick), _tick_text(tick, ticks)
        if vertical:
            out += [_line(at, a, at, b, "grid"), _text(at, b + 16, label, "muted", "middle")]
        else:
            out += [_line(a, at, b, at, "grid"), _text(a - 6, at + 4, label, "muted", "end")]
    return out


def _svg(title: str, subtitle: str, height: float, body: list[str]) -> str:
    head = _text(12, 22, title, "title") + _text(12, 40, subtitle, "muted")
    return f"<svg viewBox='0 0 {_WIDTH} {height:.0f}' role='img' aria-label='{escape(title)}'>{head}{''.join(body)}</svg>"


def _bar_chart(
    title: str, axis: str, bars: list[_Bar], subtitle: str, lo: float = 0.0, hi: float | None = None
) -> str:
    if not bars:
        return _svg(title, "no stage has this value", 60, [])
    ticks = _ticks(lo, hi if hi is not None else max(max(b.value, b.whisker or 0) for b in bars))
    lo, hi = ticks[0], ticks[-1]
    left = 20 + _CHAR_W * max(len(b.label) for b in bars)
    right = 14 + _CHAR_W * max(len(b.text) for b in bars)
    top, row = 56, 32
    bottom = top + row * len(bars)

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * (_WIDTH - left - right)

    body = _grid(ticks, x, (top - 4, bottom), vertical=True)
    for i, bar in enumerate(bars):
        mid, cls = top + row * i + row / 2, "strong" if bar.role == "bundle" else ""
        body.append(_text(left - 10, mid + 4, bar.label, cls, "end"))
        width = max(x(bar.value) - x(lo), 1.5)
        body.append(
            f"<rect x='{x(lo):.1f}' y='{mid - 10:.1f}' width='{width:.1f}' height='20' rx='2' fill='{_COLOURS[bar.role]}'/>"
        )
        if bar.whisker is not None:
            body.append(
                _line(x(bar.value), mid, x(bar.whisker), mid, "ink")
                + _line(x(bar.whisker), mid - 6, x(bar.whisker), mid + 6, "ink")
            )
        body.append(_text(x(max(bar.value, bar.whisker or bar.value)) + 6, mid + 4, bar.text, cls))
    body.append(_line(x(lo), top - 4, x(lo), bottom, "axis"))
    body.append(_text((left + _WIDTH - right) / 2, bottom + 36, axis, anchor="middle"))
    return _svg(title, subtitle, bottom + 48, body)


def _scatter(title: str, x_axis: str, y_axis: str, points: list[_Point], y_lo: float, y_hi: float) -> str:
    if not points:
        return _svg(title, "no stage has both latency and fidelity", 60, [])
    xt, yt = _ticks(0.0, max(p.x for p in points) * 1.1), _ticks(y_lo, y_hi)
    left, right, top, bottom = 78.0, _WIDTH - 20.0, 56.0, 326.0

    def sx(v: float) -> float:
        return left + (v - xt[0]) / (xt[-1] - xt[0]) * (right - left)

    def sy(v: float) -> float:
        # Headroom above the top tick keeps the reference (at exactly 1.0) off the frame.
        return bottom - (v - yt[0]) / (yt[-1] - yt[0]) * (bottom - top - 14)

    body = _grid(xt, sx, (top, bottom), vertical=True) + _grid(yt, sy, (left, right), vertical=False)
    body += [_line(left, top, left, bottom, "axis"), _line(left, bottom, right, bottom, "axis")]
    body.append(_text((left + right) / 2, bottom + 36, x_axis, anchor="middle"))
    turn = f" transform='rotate(-90 18 {(top + bottom) / 2:.1f})'"
    body.append(_text(18, (top + bottom) / 2, y_axis, anchor="middle", extra=turn))
    centres = [(sx(p.x), sy(p.y)) for p in points]
    taken: list[_Box] = [(cx - 9, cy - 9, cx + 9, cy + 9) for cx, cy in centres]
    for p, (cx, cy) in sorted(zip(points, centres, strict=True), key=lambda pc: pc[1][1]):
        cls = "strong" if p.role == "bundle" else ""
        width = _CHAR_W * len(p.label) * (1.1 if cls else 1.0)  # bold runs wider
        box = _place_label(cx, cy, width, taken, (left, top, right, bottom))
        taken.append(box)
        on_right, mid = box[0] > cx, (box[1] + box[3]) / 2
        if abs(mid - cy) > 1:
            body.append(_line(cx, cy, box[0] - 2 if on_right else box[2] + 2, mid, "leader"))
        body.append(
            _text(box[0], mid + 4, p.label, cls) if on_right else _text(box[2], mid + 4, p.label, cls, "end")
        )
    # The bundle goes last so that it is drawn on top when it shares a spot with the quantized model.
    for p, (cx, cy) in sorted(zip(points, centres, strict=True), key=lambda pc: pc[0].role == "bundle"):
        radius = 7 if p.role == "bundle" else 5.5
        body.append(
            f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='{radius}' fill='{_COLOURS[p.role]}' stroke='#3a424c'/>"
        )
    return _svg(title, "up and to the left is better", bottom + 48, body)


def _place_label(cx: float, cy: float, width: float, taken: list[_Box], frame: _Box) -> _Box:
    """The first spot beside the point, then further up or down, that stays in the frame and hits nothing."""
    # Stages often land on nearly the same spot (quantize and bundle); a leader line ties a moved label back.
    for dy in (0, -16, 16, -32, 32, -48, 48, -64, 64):
        for x0 in (cx + 12, cx - 12 - width):
            box = (x0, cy + dy - 8, x0 + width, cy + dy + 8)
            inside = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]
            if inside and not any(_overlap(box, other) for other in taken):
                return box
    return (cx + 12, cy - 8, cx + 12 + width, cy + 8)


def _overlap(a: _Box, b: _Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
