"""SVG charts for report.html: horizontal bar charts and a labelled scatter plot, no scripts, no libraries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

# A whisker longer than this many times the longest bar is clipped at the axis end (with an arrow).
WHISKER_CAP = 2.5
COLOURS = {"reference": "#b3b8be", "stage": "#9cbad3", "bundle": "#d9822b"}
# NOTE: SVG cannot measure text without a browser; this average glyph width at 12px keeps the label
# column and the value labels clear of the bars and of each other.
_CHAR_W = 7.0
_WIDTH = 600
_Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # the value label drawn after the bar
    role: str  # "reference", "stage" or "bundle": picks the colour
    whisker: float | None = None


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    role: str


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
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


def bar_chart(
    title: str, axis: str, bars: list[Bar], subtitle: str, lo: float = 0.0, hi: float | None = None
) -> str:
    if not bars:
        return _svg(title, "no stage has this value", 60, [])
    if hi is None:
        # A long tail (one side's p90 far past every p50) would squeeze every bar to a sliver: the axis stops at
        # WHISKER_CAP x the largest bar and a longer whisker ends in an arrow, its value printed beside it.
        longest = max(b.value for b in bars)
        hi = max(min(b.whisker or 0, WHISKER_CAP * longest) for b in bars) if longest > 0 else 1.0
        hi = max(hi, longest)
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    if any((b.whisker or 0) > hi for b in bars):
        subtitle += " · an arrow: the p90 runs past the axis (its value is printed)"
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
            f"<rect x='{x(lo):.1f}' y='{mid - 10:.1f}' width='{width:.1f}' height='20' rx='2' fill='{COLOURS[bar.role]}'/>"
        )
        if bar.whisker is not None:
            end = x(bar.whisker)
            body.append(_line(x(bar.value), mid, end, mid, "ink"))
            if bar.whisker > hi:  # clipped: an arrow at the axis end says the tail goes on
                body.append(f"<path d='M{end - 7:.1f},{mid - 5:.1f} L{end:.1f},{mid:.1f} L{end - 7:.1f},{mid + 5:.1f}' "
                            "class='ink' fill='none'/>")
            else:
                body.append(_line(end, mid - 6, end, mid + 6, "ink"))
        body.append(_text(x(max(bar.value, bar.whisker or bar.value)) + 6, mid + 4, bar.text, cls))
    body.append(_line(x(lo), top - 4, x(lo), bottom, "axis"))
    body.append(_text((left + _WIDTH - right) / 2, bottom + 36, axis, anchor="middle"))
    return _svg(title, subtitle, bottom + 48, body)


def scatter(title: str, x_axis: str, y_axis: str, points: list[Point], y_lo: float, y_hi: float,
            subtitle: str = "up and to the left is better") -> str:
    if not points:
        return _svg(title, "no stage has both latency and fidelity", 60, [])
    xt, yt = nice_ticks(0.0, max(p.x for p in points) * 1.1), nice_ticks(y_lo, y_hi)
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
            f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='{radius}' fill='{COLOURS[p.role]}' stroke='#3a424c'/>"
        )
    return _svg(title, subtitle, bottom + 48, body)


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


def fidelity_range(values: list[float]) -> tuple[float, float]:
    # Similarity-style metrics cluster just under 1.0; drawn from zero, every bar would look the same.
    if not values or max(values) > 1 or min(values) < 0.5:
        return min([0.0, *values]), max(values, default=1.0) or 1.0
    ticks = nice_ticks(min(values) - max((1 - min(values)) * 0.25, 5e-4), 1.0)
    return ticks[0], ticks[-1]
