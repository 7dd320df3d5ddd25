"""The architecture x task coverage matrix: which tiny models hfexport builds, refuses or crashes on.

    python scripts/coverage_matrix.py --list                      # the rows, nothing built
    python scripts/coverage_matrix.py --quick --out coverage-out  # every row on cpu and openvino
    python scripts/coverage_matrix.py --only 'bert|vit' --target cpu --timeout 300

Each row (scripts/coverage_models.py: tiny random-init models of transformers 5.x configs with their
tokenizer / image processor / feature extractor, built here without the hub) is saved once, then built with
`hfexport build --model FOLDER --target T --output ... --force` as a user would (default recipe; --task
only where the folder cannot say it, the NLI head of zero-shot). Each outcome is one of:
  built    exit 0 (gates passed), or exit 3 (the build ran end to end and a fidelity gate failed: no bundle)
  refused  a non-zero exit with one `error:` line (or Click's usage `Error:`) and no traceback: the tool
           says it does not build this
  crash    a traceback, an "unexpected" error, no error line, a timeout or a signal
Writes OUT/coverage.md (a table, rows x targets, a short reason per cell that is not a passing build, and the
summary), OUT/coverage.json and OUT/logs/<row>__<target>.log (each build's whole output).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coverage_models import Row, rows  # noqa: E402

TARGETS = ("cpu", "openvino")
EXIT_GATES = 3  # hfexport/_cli_errors.py


@dataclass
class Outcome:
    row: str
    target: str
    outcome: str  # built, refused, crash
    reason: str  # a short reason for the cell ("" for a passing build)
    exit_code: int | None
    seconds: float
    gates_passed: bool | None = None  # built only: exit 0 -> True, exit 3 -> False
    built_task: str | None = None  # the task the manifest records (built with exit 0)
    log: str = ""


def classify(exit_code: int | None, output: str, timed_out: bool = False) -> tuple[str, str, bool | None]:
    """(outcome, reason, gates_passed) of one `hfexport build` from its exit code and its whole output."""
    if timed_out:
        return "crash", "timeout", None
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return "crash", f"killed by {name}", None
    errors = [line.strip() for line in output.splitlines() if line.startswith(("error:", "Error:"))]
    if "Traceback (most recent call last)" in output:
        return "crash", "traceback: " + _last_exception(output), None
    if any("unexpected" in line for line in errors):
        return "crash", _short(next(line for line in errors if "unexpected" in line)), None
    if exit_code == 0:
        return "built", "", True
    if exit_code == EXIT_GATES and errors:
        failed = errors[-1].removeprefix("error: fidelity gate failed: ").split("; report kept in")[0]
        return "built", _short(failed), False
    if len(errors) == 1:
        return "refused", _short(errors[0]), None
    if not errors:
        return "crash", f"exit {exit_code} without an error line", None
    return "crash", f"exit {exit_code} with {len(errors)} error lines: " + _short(errors[-1]), None


def _last_exception(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    found = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    return _short(found[-1] if found else lines[-1])


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(re.sub(r"^(error|Error):\s*", "", text.strip()).split())
    text = re.sub(r"/\S*/(models|bundles)/", "", text)  # folders of this run: the row name says which
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_one(row: Row, target: str, model: Path, out: Path, timeout: float, quick: bool) -> Outcome:
    """One `hfexport build` in its own process group (a timeout ends its children too)."""
    bundle = out / "bundles" / f"{row.slug}__{target}"
    command = [*_hfexport(), "build", "--model", str(model), "--target", target, "--output", str(bundle), "--force"]
    if row.cli_task:
        command += ["--task", row.cli_task]
    if quick:
        command += ["--validation", "quick"]
    env = {**os.environ, "HFEXPORT_CACHE_DIR": str(out / "stage-cache"), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    seconds = time.perf_counter() - started
    log = out / "logs" / f"{row.slug}__{target}.log"
    log.write_text(f"$ {' '.join(command)}\n{output}\n[exit {process.returncode}, {seconds:.1f}s"
                   f"{', timed out' if timed_out else ''}]\n", encoding="utf-8")
    outcome, reason, gates = classify(process.returncode, output, timed_out)
    built_task = _built_task(bundle) if outcome == "built" and gates else None
    if timed_out:
        reason = f"timeout after {timeout:.0f}s"
    if built_task and not row.same_task(built_task):
        reason = f"built as {built_task}"
    shutil.rmtree(bundle, ignore_errors=True)  # the table is the result; bundles would fill the disk
    shutil.rmtree(bundle.with_name(bundle.name + ".failed-report"), ignore_errors=True)
    return Outcome(row.name, target, outcome, reason, process.returncode, round(seconds, 1), gates, built_task,
                   str(log.relative_to(out)))


def _hfexport() -> list[str]:
    """The `hfexport` command installed beside this Python (as a user runs it), else the module."""
    script = Path(sys.executable).with_name("hfexport")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hfexport.cli"]


def _built_task(bundle: Path) -> str | None:
    try:
        return json.loads((bundle / "manifest.json").read_text())["model"]["task"]
    except (OSError, ValueError, KeyError):
        return None


# -- the table ---------------------------------------------------------------------------------------


def cell(result: Outcome) -> str:
    if result.outcome == "built":
        mark = "built" if result.gates_passed else "built, gates failed"
    else:
        mark = result.outcome.upper() if result.outcome == "crash" else result.outcome
    reason = re.sub(r"^[\w.-]+__[\w.-]+: ", "", result.reason)  # the folder's name: the row says it
    reason = reason.replace("|", "\\|")
    return f"{mark}: {reason}" if reason else mark


def summary(results: list[Outcome], targets: list[str]) -> list[str]:
    lines = []
    for target in targets:
        mine = [r for r in results if r.target == target]
        n = len(mine) or 1
        count = {k: sum(r.outcome == k for r in mine) for k in ("built", "refused", "crash")}
        gates = sum(r.outcome == "built" and not r.gates_passed for r in mine)
        other = sum(r.outcome == "built" and r.reason.startswith("built as") for r in mine)
        lines.append(f"{target}: built {count['built']}/{len(mine)} ({100 * count['built'] / n:.0f}%; "
                     f"{gates} of them failed a gate, {other} built as another task), refused {count['refused']} "
                     f"({100 * count['refused'] / n:.0f}%), crashed {count['crash']} "
                     f"({100 * count['crash'] / n:.0f}%)")
    return lines


def markdown(results: list[Outcome], matrix_rows: list[Row], targets: list[str], header: str) -> str:
    by_key = {(r.row, r.target): r for r in results}
    lines = [header, "", "| family | architecture | task | " + " | ".join(targets) + " |",
             "|---|---|---|" + "---|" * len(targets)]
    for row in matrix_rows:
        cells = [cell(by_key[(row.name, t)]) if (row.name, t) in by_key else "not run" for t in targets]
        arch = f"{row.arch} ({row.note})" if row.note else row.arch
        lines.append(f"| {row.family} | {arch} | {row.task} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {line}" for line in summary(results, targets))]
    return "\n".join(lines) + "\n"


# -- the run ------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _interleaved(matrix_rows: list[Row]) -> list[Row]:
    """The rows in turn by family (an encoder, an LLM, a seq2seq model, ...), so a run stopped early, or its
    table read while it runs, covers every family alike; the table keeps the rows' own order."""
    by_family: dict[str, list[Row]] = {}
    for row in matrix_rows:
        by_family.setdefault(row.family, []).append(row)
    queues = list(by_family.values())
    order = []
    while any(queues):
        order += [queue.pop(0) for queue in queues if queue]
    return order


def run_matrix(matrix_rows: list[Row], targets: list[str], out: Path, jobs: int, timeout: float,
               quick: bool, on_result=None) -> list[Outcome]:
    """Every row on every target; `on_result(results so far)` after each build (the table is rewritten)."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "bundles").mkdir(parents=True, exist_ok=True)
    models = out / "models"
    made: dict[str, Path | str] = {}
    for i, row in enumerate(matrix_rows, 1):
        folder = models / row.slug
        try:
            if not (folder / "config.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                row.make(folder)
            made[row.name] = folder
        except Exception as exc:  # a row this script cannot make is its own bug, shown in the table
            made[row.name] = f"{type(exc).__name__}: {exc}"
        print(f"made {i}/{len(matrix_rows)} model folders ({row.name})", file=sys.stderr, flush=True)

    work = [(row, target) for row in _interleaved(matrix_rows) for target in targets]
    results: list[Outcome] = []
    lock, started = threading.Lock(), time.perf_counter()

    def one(item) -> Outcome:
        row, target = item
        folder = made[row.name]
        if isinstance(folder, str):
            result = Outcome(row.name, target, "setup", "the script could not make this model: " + _short(folder),
                             None, 0.0)
        else:
            result = run_one(row, target, folder, out, timeout, quick)
        with lock:
            results.append(result)
            done = len(results)
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (len(work) - done)
            count = {k: sum(r.outcome == k for r in results) for k in ("built", "refused", "crash")}
            print(f"[{done}/{len(work)}] {row.name} on {target}: {cell(result)} ({result.seconds:.0f}s) | "
                  f"built {count['built']}, refused {count['refused']}, crashed {count['crash']} | "
                  f"ETA {_duration(eta)}", file=sys.stderr, flush=True)
            if on_result is not None:
                on_result(list(results))
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, work))
    order = {(row.name, t): i for i, (row, t) in enumerate(work)}
    return sorted(results, key=lambda r: order[(r.row, r.target)])


def render(data: dict) -> str:
    """The markdown of a coverage.json, the rows in the matrix's order."""
    results = [Outcome(**r) for r in data["results"]]
    names = {r.row for r in results}
    targets = list(dict.fromkeys(r.target for r in results))
    state = ("" if data.get("done") == data.get("total")
             else f"\n\n**Stopped after {data.get('done')} of {data.get('total')} builds.**")
    return markdown(results, [row for row in rows() if row.name in names], targets, data["header"] + state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the rows and build nothing")
    parser.add_argument("--only", default=None, help="rows whose name (arch/task) or family matches this regex")
    parser.add_argument("--target", action="append", default=None, help="repeatable [default: cpu and openvino]")
    parser.add_argument("--jobs", type=int, default=1, help="builds at once [default: 1]")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per build [default: 600]")
    parser.add_argument("--out", type=Path, default=Path("coverage-out"), help="folder for models, logs, table")
    parser.add_argument("--quick", action="store_true", help="build with --validation quick")
    parser.add_argument("--render", type=Path, default=None,
                        help="print the table of a coverage.json again (after a stopped run, or a change here)")
    args = parser.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0

    matrix_rows = rows()
    if args.only:
        pattern = re.compile(args.only)
        matrix_rows = [r for r in matrix_rows if pattern.search(r.name) or pattern.search(r.family)]
    if args.list:
        for row in matrix_rows:
            task = f" (--task {row.cli_task})" if row.cli_task else ""
            note = f"  [{row.note}]" if row.note else ""
            print(f"{row.family:<13} {row.name}{task}{note}")
        families = sorted({r.family for r in matrix_rows})
        print(f"{len(matrix_rows)} rows, families: {', '.join(families)}")
        return 0
    if not matrix_rows:
        parser.error(f"--only {args.only!r} matches no row (see --list)")
    targets = args.target or list(TARGETS)
    out = args.out.resolve()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (f"Coverage matrix, started {started}: {len(matrix_rows)} rows x {', '.join(targets)}, default "
              f"recipes{', --validation quick' if args.quick else ''} (`python scripts/coverage_matrix.py"
              f"{' --quick' if args.quick else ''}`)")
    total = len(matrix_rows) * len(targets)

    def write(results: list[Outcome]) -> str:
        state = "" if len(results) == total else f"\n\n**In progress: {len(results)} of {total} builds done.**"
        table = markdown(results, matrix_rows, targets, header + state)
        (out / "coverage.md").write_text(table, encoding="utf-8")
        (out / "coverage.json").write_text(json.dumps({"header": header, "done": len(results), "total": total,
                                                       "summary": summary(results, targets),
                                                       "results": [asdict(r) for r in results]}, indent=2) + "\n")
        return table

    results = run_matrix(matrix_rows, targets, out, args.jobs, args.timeout, args.quick, on_result=write)
    print(write(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
