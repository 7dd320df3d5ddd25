"""report.html: content, escaping, offline-ness, and a real render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hfexport.report.html import render_html
from hfexport.report.schema import Evaluation, GateResult, Report, StageMetrics

CHROMIUM = Path("/usr/bin/chromium")
STAGE_NAMES = ["pytorch", "export_onnx", "optimize", "quantize", "bundle"]


def _latency(p50: float, p90: float) -> dict:
    return {"p50_ms": p50, "p90_ms": p90, "runs": 50}


def _report(passed: bool = True) -> Report:
    cosine_min_gate = 0.98 if passed else 0.985
    return Report(
        created="2025-06-01T12:00:00Z",
        model={
            "id": "sentence-transformers/all-MiniLM-L6-v2",
            "revision": "c9745ed1",
            "task": "feature-extraction",
        },
        target={
            "name": "cpu",
            "backend": "onnxruntime",
            "isa": "avx512_vnni",
            "precision": "int8",
            "execution_providers": ["CPUExecutionProvider"],
        },
        host={
            "cpu": "Intel(R) Xeon(R) Platinum 8480+",
            "isas": ["amx", "avx512_vnni", "avx512", "avx2", "generic"],
            "logical_cpus": 16,
            "python": "3.11.9",
            "onnxruntime": "1.20.1",
            "torch": "2.6.0",
        },
        evaluation=Evaluation(
            samples=200,
            sequence_length=128,
            batch_size=32,
            latency_runs=50,
            threads=4,
            text_source="hfexport held-out sentences",
        ),
        stages=[
            StageMetrics(
                name="pytorch",
                kind="torch",
                size_bytes=90_868_376,
                latency=_latency(9.62, 11.20),
                throughput_per_s=412.5,
                peak_rss_mb=612,
            ),
            StageMetrics(
                name="export_onnx",
                kind="onnx",
                size_bytes=90_405_214,
                pass_seconds=6.4,
                latency=_latency(5.08, 5.61),
                throughput_per_s=780.2,
                fidelity={"cosine_mean": 0.999999, "cosine_min": 0.999995},
            ),
            StageMetrics(
                name="optimize",
                kind="onnx",
                size_bytes=90_311_002,
                pass_seconds=2.1,
                latency=_latency(4.41, 4.93),
                throughput_per_s=901.7,
                fidelity={"cosine_mean": 0.999998, "cosine_min": 0.999990},
                notes=["fused 6 attention blocks"],
            ),
            StageMetrics(
                name="quantize",
                kind="onnx",
                size_bytes=23_010_112,
                pass_seconds=11.8,
                latency=_latency(3.12, 3.44),
                throughput_per_s=1390.4,
                fidelity={"cosine_mean": 0.9951, "cosine_min": 0.9815},
                notes=["<script>alert('x')</script> dynamic int8, per-channel"],
            ),
            StageMetrics(
                name="bundle",
                kind="bundle",
                size_bytes=23_425_880,
                pass_seconds=0.4,
                latency=_latency(3.10, 3.47),
                throughput_per_s=1402.9,
                peak_rss_mb=148,
                fidelity={"cosine_mean": 0.9950, "cosine_min": 0.9812},
            ),
        ],
        gates=[
            GateResult(metric="cosine_mean", value=0.9950, threshold=0.99, passed=True),
            GateResult(metric="cosine_min", value=0.9812, threshold=cosine_min_gate, passed=passed),
        ],
        passed=passed,
        summary={
            "speedup": 9.62 / 3.10,
            "size_ratio": 23_425_880 / 90_868_376,
            "cosine_mean": 0.9950,
            "cosine_min": 0.9812,
        },
    )


@pytest.fixture
def report() -> Report:
    return _report()


@pytest.fixture
def failing_report() -> Report:
    return _report(passed=False)


def test_render_html_shows_summary_numbers(report: Report) -> None:
    page = render_html(report)
    assert "3.1x faster than PyTorch" in page
    assert "0.26x the size" in page
    assert "cosine mean 0.9950 (min 0.9812)" in page
    assert "sentence-transformers/all-MiniLM-L6-v2" in page
    assert "PASSED" in page and "FAILED" not in page


def test_render_html_shows_failed_badge_and_gate_when_a_gate_fails(failing_report: Report) -> None:
    page = render_html(failing_report)
    assert "FAILED" in page and "PASSED" not in page
    assert "0.9850" in page  # the threshold the bundle missed
    assert "badge fail" in page


def test_render_html_names_every_stage(report: Report) -> None:
    page = render_html(report)
    for name in STAGE_NAMES:
        # In the stage table and on the category axis of the plots.
        assert page.count(f">{name}<") >= 3, name


def test_render_html_draws_four_plots(report: Report) -> None:
    assert render_html(report).count("<svg") == 4


def test_render_html_references_nothing_outside_the_page(report: Report) -> None:
    page = render_html(report)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_render_html_escapes_stage_notes(report: Report) -> None:
    page = render_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_render_html_shows_missing_values_as_dash(report: Report) -> None:
    page = render_html(report)
    # The reference has no pass time and no fidelity of its own.
    assert re.search(r"<tr class='reference'><td>pytorch</td>(?:<td>[^<]*</td>)*<td>–</td>", page)


def test_render_html_states_the_timing_note_and_host_facts(report: Report) -> None:
    page = render_html(report)
    assert "Timings are medians over 50 runs measured in one process, side by side" in page
    for fact in ("Intel(R) Xeon(R) Platinum 8480+", "avx512_vnni", "onnxruntime", "1.20.1", "128"):
        assert fact in page


def test_render_html_skips_stages_without_a_value_in_a_plot(report: Report) -> None:
    report.stages[1].latency = None
    page = render_html(report)
    latency_svg = page.split("<svg")[1]
    assert ">export_onnx<" not in latency_svg
    assert page.count("<svg") == 4


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless render needs /usr/bin/chromium (apt-get install chromium)"
)
def test_render_html_renders_in_headless_chromium(report: Report, tmp_path: Path) -> None:
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(render_html(report), encoding="utf-8")
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1280,2400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert png.exists(), "chromium wrote no screenshot"
    assert png.stat().st_size > 20_000, f"screenshot is only {png.stat().st_size} bytes"
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_long_latency_tail_is_clipped_with_an_arrow_and_its_value(report: Report) -> None:
    """One side's p90 far past every p50 would squeeze the other bars to slivers: the axis stops at 2.5x the
    longest bar, the long whisker ends in an arrow, and the label still prints the whole p90."""
    report.stages[0].latency.p90_ms = 95.0  # PyTorch p50 9.62 ms: a tail ~10x its median
    page = render_html(report)
    assert "an arrow: the p90 runs past the axis" in page
    assert page.count("<path d='M") == 1  # only the clipped whisker gets an arrow
    assert "9.62 ms (p90 95.00)" in page
    chart = next(svg for svg in page.split("<svg")[1:] if "Latency per stage" in svg)
    tick_labels = re.findall(r"class='muted' text-anchor='middle'>([\d.]+)</text>", chart)
    assert max(float(t) for t in tick_labels) < 95  # the axis was not stretched to the tail


def test_latency_whiskers_within_reach_are_drawn_whole(report: Report) -> None:
    page = render_html(report)
    assert "an arrow" not in page and "<path d='M" not in page
    chart = next(svg for svg in page.split("<svg")[1:] if "Latency per stage" in svg)
    assert "p90 11.20" in chart


def test_stage_notes_sit_in_a_full_width_row_under_their_stage(report: Report) -> None:
    """Notes wrap across the table's width instead of adding a column that pushes the table past the page."""
    page = render_html(report)
    columns = re.search(r"<table><thead><tr>((?:<th>[^<]*</th>)+)</tr></thead><tbody><tr class='reference'>",
                        page).group(1).count("<th>")
    assert f"<tr class='notes stage'><td colspan='{columns}'>fused 6 attention blocks</td></tr>" in page
    assert "<th>notes</th>" not in page


def test_compile_only_checks_are_shown_as_compile_only(report: Report) -> None:
    report.compile_checks = {"tpu_compile_check": {
        "note": "compile-only: compiled for TPU topologies that are not attached; nothing ran on a TPU",
        "rows": [{"topology": "v5e:2x2", "batch": 1, "sequence": 128, "compiled": True, "flops": 2.9e9,
                  "bytes_accessed": 4.6e7, "memory_bytes": 9.1e7},
                 {"topology": "v6e:2x2", "batch": 32, "sequence": 512, "compiled": False, "error": "RESOURCE_EXHAUSTED"}]}}
    page = render_html(report)
    assert "<h2>TPU compile check</h2>" in page and "nothing ran on a TPU" in page
    assert "<td>v5e:2x2</td><td>1</td><td>128</td><td><span class='badge pass'>yes</span></td><td>2.90</td>" in page
    assert "<span class='badge fail'>no</span>" in page and "RESOURCE_EXHAUSTED" in page


def test_no_compile_check_section_without_one(report: Report) -> None:
    assert "compile check" not in render_html(report)


def test_image_reports_count_images_not_texts(report: Report) -> None:
    report.model.task = "image-classification"
    page = render_html(report)
    assert "<th>images/s</th>" in page and "texts/s" not in page
    assert "sequence length" not in page and "<dt>image source</dt>" in page


def test_a_skipped_compile_check_shows_its_note_without_an_empty_table(report: Report) -> None:
    report.compile_checks = {"tpu_compile_check": {"note": "skipped: libtpu is not installed"}}
    page = render_html(report)
    assert "skipped: libtpu is not installed" in page and "<th>topology</th>" not in page
