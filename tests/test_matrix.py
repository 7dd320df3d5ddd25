"""`hfexport matrix`: every combination built, in process or on a local Ray cluster, with the same fidelity;
a Ray worker killed in the middle of a build is retried and the run completes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hfexport.cli import main
from hfexport.errors import ConfigError, PlanError
from hfexport.matrix import Combo, plan_matrix, run_matrix, write_matrix_report
from hfexport.progress import Progress

EXPORT = [{"type": "export"}]
INT8 = [{"type": "export"}, {"type": "quantize", "precision": "int8"}]


def test_plan_checks_every_target_and_recipe_before_building():
    with pytest.raises((ConfigError, PlanError), match="cpux"):
        plan_matrix([None], ["cpu", "cpux"], [None])
    with pytest.raises((ConfigError, PlanError), match="nonexistent"):
        plan_matrix([None], ["cpu"], ["nonexistent"])
    combos = plan_matrix(["a/m1", "b/m2"], ["cpu", "openvino"], ["fp32", None])
    assert len(combos) == 8 and len({c.slug for c in combos}) == 8
    assert Combo("x/m1", "cpu", None).slug == "m1--cpu--default"


def test_plan_refuses_two_models_that_would_share_a_folder():
    with pytest.raises(ConfigError, match="same bundle folder"):
        plan_matrix(["a/model", "b/model"], ["cpu"], [None])


def test_matrix_sequential_writes_bundles_and_reports(tiny_model, fast_recipe, tmp_path):
    model = str(tiny_model("bert", "feature-extraction"))
    failing = str(fast_recipe(INT8, {"cosine_min": 1.0}))  # int8 is never exact: this gate fails
    combos = plan_matrix([model], ["cpu"], [str(fast_recipe(EXPORT)), failing])
    run = run_matrix(combos, tmp_path / "out", ray=False, progress=Progress("quiet"))
    passed, failed = run.outcomes
    assert passed.status == "passed" and Path(passed.bundle, "manifest.json").is_file()
    assert passed.summary["cosine_min"] > 0.9999
    assert failed.status == "gates failed" and failed.bundle is None and "cosine_min" in failed.error
    assert failed.gates and not (tmp_path / "out" / failed.combo.slug).exists()  # no bundle for a failed gate
    paths = write_matrix_report(run, tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert [r["status"] for r in saved["results"]] == ["passed", "gates failed"]
    assert "| passed |" in paths["md"].read_text()
    page = paths["html"].read_text()
    assert "1 of 2 combinations passed" in page and "<svg" in page and "cpu: speed vs cosine" in page


def test_matrix_cli_exits_non_zero_when_a_combination_fails(tiny_model, fast_recipe, tmp_path):
    model = str(tiny_model("bert", "feature-extraction"))
    result = CliRunner().invoke(main, ["matrix", "-m", model, "-r", str(fast_recipe(INT8, {"cosine_min": 1.0})),
                                       "--sequential", "-q", "-o", str(tmp_path / "m")])
    assert result.exit_code == 1, result.output
    assert "0 of 1 combinations passed" in result.output and (tmp_path / "m" / "matrix.html").is_file()


def _kill_first_build_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a build (its process title names the task), once."""
    while not stop.is_set() and not killed:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::hfexport-build"):
                time.sleep(2.0)  # well into the build: past start-up, inside export or validation
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                except ProcessLookupError:
                    continue
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_matrix_on_local_ray_matches_sequential_and_survives_a_killed_worker(tiny_model, fast_recipe, tmp_path):
    ray = pytest.importorskip("ray", reason="pip install 'hfexport[scale]' for the Ray matrix")
    model = str(tiny_model("bert", "feature-extraction"))
    recipes = [str(fast_recipe(EXPORT)), str(fast_recipe(INT8))]
    combos = plan_matrix([model], ["cpu", "openvino"], recipes)
    sequential = run_matrix(combos, tmp_path / "seq", ray=False, progress=Progress("quiet"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:  # noqa: BLE001 - a sandbox without the sockets Ray needs
        pytest.skip(f"Ray cannot start here: {exc}")
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_first_build_worker, args=(killed, stop), daemon=True)
    watcher.start()
    try:
        on_ray = run_matrix(combos, tmp_path / "ray", ray=True, retries=2, progress=Progress("quiet"))
    finally:
        stop.set()
        ray.shutdown()
    assert killed, "no build worker was seen to kill"
    assert [o.status for o in on_ray.outcomes] == ["passed"] * 4, [o.line() for o in on_ray.outcomes]
    assert on_ray.concurrent == 2
    for a, b in zip(sequential.outcomes, on_ray.outcomes, strict=True):
        assert {g["metric"]: g["value"] for g in a.gates} == {g["metric"]: g["value"] for g in b.gates}, a.combo
