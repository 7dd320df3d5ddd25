"""scripts/coverage_matrix.py: its rows, the model folders it makes, and how it classifies real builds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
FAMILIES = {"text-encoder", "decoder-llm", "seq2seq", "vision", "audio", "dual-encoder"}


@pytest.fixture(scope="module")
def matrix():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("coverage_matrix", SCRIPTS / "coverage_matrix.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["coverage_matrix"] = module  # its dataclasses resolve their annotations through it
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPTS))


def test_list_prints_at_least_60_rows_of_every_family(matrix, capsys):
    assert matrix.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = lines[:-1]
    assert len(rows) >= 60 and lines[-1].startswith(f"{len(rows)} rows")
    assert {line.split()[0] for line in rows} == FAMILIES
    names = [line.split()[1] for line in rows]
    assert len(set(names)) == len(names)  # one line per architecture x task
    for expected in ("deberta-v3/feature-extraction", "gemma2/text-generation", "t5-encoder/feature-extraction",
                     "whisper/automatic-speech-recognition", "siglip/zero-shot-image-classification"):
        assert expected in names
    assert "--task zero-shot-classification" in next(line for line in rows if "bert/zero-shot" in line)


def _first_of_each_family(matrix):
    seen: dict[str, object] = {}
    for row in matrix.rows():
        seen.setdefault(row.family, row)
    return list(seen.values())


def test_one_row_per_family_makes_a_folder_transformers_loads(matrix, tmp_path):
    import transformers

    for row in _first_of_each_family(matrix):
        folder = tmp_path / row.slug
        row.make(folder)
        config = transformers.AutoConfig.from_pretrained(str(folder))
        (architecture,) = config.architectures
        model = getattr(transformers, architecture).from_pretrained(str(folder))
        assert sum(p.numel() for p in model.parameters()) < 2_000_000, row.name  # tiny
        if row.family in ("vision",):
            transformers.AutoImageProcessor.from_pretrained(str(folder))
        elif row.family in ("audio", "dual-encoder"):
            transformers.AutoProcessor.from_pretrained(str(folder))
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
            assert tokenizer.is_fast and (folder / "tokenizer.json").is_file(), row.name


def test_deberta_v3_row_has_the_v3_layout(matrix, tmp_path):
    row = next(r for r in matrix.rows() if r.name == "deberta-v3/feature-extraction")
    row.make(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "deberta-v2" and config["type_vocab_size"] == 0
    assert config["position_biased_input"] is False and config["relative_attention"] is True


def _row(matrix, arch, task, cli_task=None):
    from coverage_models import Row, _text_encoder

    return Row("text-encoder", arch, cli_task or task, _text_encoder(arch, task), cli_task=cli_task)


def test_a_real_refusal_is_classified_refused(matrix, tmp_path):
    # A sentiment head (labels negative/positive) asked for zero-shot: hfexport refuses it before any work.
    row = _row(matrix, "bert", "text-classification", cli_task="zero-shot-classification")
    row.make(tmp_path / "models" / row.slug)
    (tmp_path / "logs").mkdir()
    result = matrix.run_one(row, "cpu", tmp_path / "models" / row.slug, tmp_path, timeout=300, quick=True)
    log = (tmp_path / result.log).read_text()
    assert result.exit_code == 1 and "Traceback" not in log
    assert result.outcome == "refused", log
    assert result.reason.startswith("zero-shot classification needs an NLI model")
    assert matrix.cell(result).startswith("refused: zero-shot")
    # --render draws the table of a stopped run's coverage.json again
    from dataclasses import asdict

    table = matrix.render({"header": "h", "done": 1, "total": 2, "results": [asdict(result)]})
    assert "| text-encoder | bert | zero-shot-classification | refused: zero-shot" in table
    assert "**Stopped after 1 of 2 builds.**" in table and "cpu: built 0/1 (0%" in table


def test_a_real_timeout_is_classified_crash_and_ends_the_build(matrix, tmp_path):
    row = _row(matrix, "bert", "feature-extraction")
    row.make(tmp_path / "models" / row.slug)
    (tmp_path / "logs").mkdir()
    result = matrix.run_one(row, "cpu", tmp_path / "models" / row.slug, tmp_path, timeout=2, quick=True)
    assert (result.outcome, result.reason) == ("crash", "timeout after 2s")
    assert result.seconds < 30  # the process group was killed, not waited for
    assert not (tmp_path / "bundles" / f"{row.slug}__cpu").exists()


@pytest.mark.slow
def test_a_real_build_is_classified_built_and_the_table_says_so(matrix, tmp_path):
    row = _row(matrix, "bert", "feature-extraction")
    row.make(tmp_path / "models" / row.slug)
    (tmp_path / "logs").mkdir()
    result = matrix.run_one(row, "cpu", tmp_path / "models" / row.slug, tmp_path, timeout=600, quick=True)
    log = (tmp_path / result.log).read_text()
    assert (result.outcome, result.exit_code, result.gates_passed) == ("built", 0, True), log
    assert result.built_task == "feature-extraction" and result.reason == ""
    assert "quick validation" in log  # --quick reached the build
    table = matrix.markdown([result], [row], ["cpu"], "header")
    assert "| text-encoder | bert | feature-extraction | built |" in table
    assert "cpu: built 1/1 (100%" in table


def test_a_real_traceback_is_classified_crash(matrix, tmp_path):
    # The same refusal with --verbose prints its traceback: a matrix cell must never call that a clean refusal.
    import subprocess

    row = _row(matrix, "bert", "text-classification", cli_task="zero-shot-classification")
    row.make(tmp_path / "m")
    done = subprocess.run([*matrix._hfexport(), "build", "--model", str(tmp_path / "m"), "--task",
                           "zero-shot-classification", "--output", str(tmp_path / "out"), "--verbose"],
                          capture_output=True, text=True, timeout=300)
    outcome, reason, _ = matrix.classify(done.returncode, done.stdout + done.stderr)
    assert (outcome, reason.split(":")[0]) == ("crash", "traceback"), done.stderr
    assert "ModelLoadError" in reason


def test_classify_rules_for_gates_unexpected_errors_and_signals(matrix):
    # The shapes hfexport prints for the outcomes a tiny model cannot be made to produce on purpose.
    assert matrix.classify(1, "error: unexpected KeyError: 'x' (rerun with --verbose for details)\n")[0] == "crash"
    gate = "error: fidelity gate failed: top1_agreement 0.9000 < 0.9500; report kept in /x/y.failed-report\n"
    assert matrix.classify(3, gate) == ("built", "top1_agreement 0.9000 < 0.9500", False)
    assert matrix.classify(-9, "") == ("crash", "killed by SIGKILL", None)
    assert matrix.classify(1, "some output\n") == ("crash", "exit 1 without an error line", None)
