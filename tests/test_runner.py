"""The pass runner and its stage cache, on tiny random-init models (each test has its own empty cache)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest

from hfexport.errors import ConfigError, DataError, ExportError
from hfexport.progress import Progress
from tests.conftest import INT8_PASSES

PRUNE_PASSES = [{"type": "prune", "method": "magnitude", "sparsity": 0.3}, {"type": "export_onnx"}]


def _build(model: Path, recipe: Path, out: Path, **kwargs):
    """Build; return the result and the progress events (JSON lines)."""
    from hfexport.api import build

    stream = io.StringIO()
    result = build(str(model), recipe=str(recipe), output=out, progress=Progress("json", stream), **kwargs)
    return result, [json.loads(line) for line in stream.getvalue().splitlines()]


def _cached(result) -> list[bool]:
    return [record["cached"] for record in result.manifest["passes"]]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(kind: str = "passes") -> list[Path]:
    """The cache's complete entries: the passes' stages, or (kind="tokenizer") the build's tokenizer folders."""
    folder = Path(os.environ["HFEXPORT_CACHE_DIR"]) / "stages"
    found = sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    return [p for p in found if (json.loads((p / "entry.json").read_text()).get("name") == "tokenizer")
            == (kind == "tokenizer")]


def test_runner_reuses_every_stage_when_only_gates_change(tiny_model, fast_recipe, tmp_path):
    first, _ = _build(tiny_model(), fast_recipe(INT8_PASSES, gates={"cosine_min": 0.5}), tmp_path / "a")
    second, events = _build(tiny_model(), fast_recipe(INT8_PASSES, gates={"cosine_min": 0.6}), tmp_path / "b")
    assert _cached(first) == [False] * 3 and _cached(second) == [True] * 3
    done = [e for e in events if e["event"] == "done" and e["step"] != "validate"]
    assert [e["cached"] for e in done] == [True] * 3
    assert [r["stats"] for r in second.manifest["passes"]] == [r["stats"] for r in first.manifest["passes"]]
    assert _sha(tmp_path / "b" / "model.onnx") == _sha(tmp_path / "a" / "model.onnx")
    assert second.report.stages[-1].fidelity == pytest.approx(first.report.stages[-1].fidelity)


def test_runner_progress_line_says_a_stage_was_reused(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    recipe = fast_recipe(gates={"cosine_min": 0.5})
    build(str(tiny_model()), recipe=str(recipe), output=tmp_path / "a", progress=Progress("quiet"))
    stream = io.StringIO()
    build(str(tiny_model()), recipe=str(recipe), output=tmp_path / "b", progress=Progress("text", stream))
    lines = stream.getvalue().splitlines()
    reused = [line for line in lines if "reused from the stage cache" in line]
    assert len(reused) == 2 and " MB; " in reused[1] and "nodes" in reused[1]


def test_runner_reruns_only_the_changed_last_pass(tiny_model, fast_recipe, tmp_path):
    _build(tiny_model(), fast_recipe(INT8_PASSES, gates={"cosine_min": 0.5}), tmp_path / "a")
    changed = [*INT8_PASSES[:2], {"type": "quantize", "precision": "int8", "per_channel": True}]
    second, _ = _build(tiny_model(), fast_recipe(changed, gates={"cosine_min": 0.5}), tmp_path / "b")
    assert _cached(second) == [True, True, False]
    assert second.manifest["passes"][2]["params"]["per_channel"] is True


def test_rebuild_reuses_the_tokenizer_without_loading_it(tiny_model, fast_recipe, tmp_path, monkeypatch):
    """A rebuild takes the saved tokenizer and its manifest facts from the cache: transformers' tokenizer is not
    loaded before validation (with every stage reused, the build imports neither torch nor transformers until
    validation; scripts/bench_rebuild.py measures it)."""
    from hfexport.build import engine

    recipe = fast_recipe(INT8_PASSES, gates={"cosine_min": 0.5})
    first, _ = _build(tiny_model(), recipe, tmp_path / "a")
    assert len(_entries("tokenizer")) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded again")

    monkeypatch.setattr(engine, "_save_tokenizer", refuse)
    second, _ = _build(tiny_model(), recipe, tmp_path / "b")
    assert second.manifest["tokenizer"] == first.manifest["tokenizer"]
    for name in ("tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"):
        assert _sha(tmp_path / "b" / name) == _sha(tmp_path / "a" / name)
    assert os.access(tmp_path / "b" / "tokenizer" / "tokenizer.json", os.W_OK)  # the bundle's copy, not read-only


def test_runner_cache_false_neither_reuses_nor_stores(tiny_model, fast_recipe, tmp_path):
    recipe = fast_recipe(gates={"cosine_min": 0.5})
    first, _ = _build(tiny_model(), recipe, tmp_path / "a", cache=False)
    assert _entries() == []
    _build(tiny_model(), recipe, tmp_path / "b")
    third, _ = _build(tiny_model(), recipe, tmp_path / "c", cache=False)
    assert _cached(first) == _cached(third) == [False, False]


def test_runner_changed_weight_file_misses(tiny_model, fast_recipe, tmp_path):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    model.mkdir()
    for path in tiny_model().iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    recipe = fast_recipe(gates={"cosine_min": 0.5})
    _build(model, recipe, tmp_path / "a")
    weights = load_file(str(model / "model.safetensors"))
    name = next(k for k in weights if k.endswith("LayerNorm.weight"))
    weights[name] = weights[name] * 1.01
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    second, _ = _build(model, recipe, tmp_path / "b")
    assert _cached(second) == [False, False]


def test_runner_caches_a_torch_stage_as_a_folder(tiny_model, fast_recipe, tmp_path):
    """A pruned checkpoint (a TorchModel folder) is stored and read back as the next pass's input."""
    _build(tiny_model(), fast_recipe(PRUNE_PASSES, gates={"cosine_min": 0.0}), tmp_path / "a")
    changed = [PRUNE_PASSES[0], {"type": "export_onnx", "opset": 17}]
    second, _ = _build(tiny_model(), fast_recipe(changed, gates={"cosine_min": 0.0}), tmp_path / "b")
    assert _cached(second) == [True, False]
    assert second.manifest["passes"][0]["stats"]["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert second.report.stage("prune").fidelity  # validation measured the cached checkpoint too


def test_runner_evicts_least_recently_used_past_the_size_bound(tmp_path):
    import time

    from hfexport.build.cache import StageCache

    cache = StageCache(tmp_path, max_bytes=2500)
    for age, key in enumerate(["old", "used", "new"]):
        stage = cache.folder / key / "stage"
        stage.mkdir(parents=True)
        (stage / "model.onnx").write_bytes(b"x" * 1000)
        (cache.folder / key / "entry.json").write_text(json.dumps({"size_bytes": 1000}))
        os.utime(cache.folder / key, (time.time() - 100 + age, time.time() - 100 + age))
    os.utime(cache.folder / "used")  # the oldest write, but used last
    assert cache.evict() == ["old"]
    assert sorted(p.name for p in cache.folder.iterdir()) == ["new", "used"]


def test_runner_build_stays_within_the_size_bound(tiny_model, fast_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HFEXPORT_CACHE_SIZE", "5MB")  # each stage of the tiny model is about 4 MB
    recipe = fast_recipe(INT8_PASSES, gates={"cosine_min": 0.5})
    _build(tiny_model(), recipe, tmp_path / "a")
    entries = [json.loads((entry / "entry.json").read_text()) for entry in _entries()]
    assert [e["name"] for e in entries] == ["quantize"]  # the last written is the last evicted
    assert sum(e["size_bytes"] for e in entries) <= 5_000_000
    second, _ = _build(tiny_model(), recipe, tmp_path / "b")
    assert _cached(second) == [False, False, True]


@pytest.mark.parametrize("value", ["lots", "20 parsecs", "-1GB"])
def test_runner_bad_cache_size_is_one_error_naming_the_variable(tiny_model, tmp_path, monkeypatch, value):
    from hfexport.api import build

    monkeypatch.setenv("HFEXPORT_CACHE_SIZE", value)
    with pytest.raises(ConfigError, match=f"HFEXPORT_CACHE_SIZE={value!r} is not a size"):
        build(str(tiny_model()), output=tmp_path / "out", progress=Progress("quiet"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("value", "size"), [("20GB", 20 * 10**9), ("500MB", 500 * 10**6), ("1.5GiB", 1.5 * 2**30),
                                             ("0", 0), ("4096", 4096), ("2 kb", 2000)])
def test_runner_cache_size_units(value, size):
    from hfexport.build.cache import parse_size

    assert parse_size(value) == size


def _failing_pass(error: Exception, kind=None):
    from hfexport.artifacts import OnnxModel
    from hfexport.passes.base import Pass, PassConfig

    class Failing(Pass):
        name, summary, consumes, produces, config_class = "failing", "raises", kind or OnnxModel, OnnxModel, PassConfig

        def run(self, artifact, ctx):
            raise error

    return Failing


@pytest.mark.parametrize(("error", "expected"), [
    (ExportError("boom"), ExportError), (DataError("no text"), DataError), (ValueError("bad value"), ValueError),
])
def test_runner_failure_names_the_pass_and_the_ones_before(tiny_model, fast_recipe, tmp_path, monkeypatch,
                                                           error, expected):
    import hfexport.passes as registry

    globals()["FailingPass"] = _failing_pass(error)
    monkeypatch.setitem(registry._catalog(), "failing", f"{__name__}:FailingPass")
    recipe = fast_recipe([{"type": "export_onnx"}, {"type": "optimize"}, {"type": "failing"}])
    with pytest.raises(expected) as caught:
        _build(tiny_model(), recipe, tmp_path / "out")
    assert type(caught.value) is expected
    assert re.fullmatch(rf"passes\.2 \(failing\) failed after export\w*, optimize: {error}", str(caught.value))
    assert caught.value.__cause__ is error
    assert not (tmp_path / "out").exists()
    # The two stages that finished are cached: the fixed rerun starts where it stopped.
    assert len(_entries()) == 2


def test_runner_failure_in_the_first_pass_names_no_others(tiny_model, fast_recipe, tmp_path, monkeypatch):
    import hfexport.passes as registry
    from hfexport.artifacts import TorchModel

    globals()["FailingPass"] = _failing_pass(ExportError("export failed: nope"), kind=TorchModel)
    monkeypatch.setitem(registry._catalog(), "failing", f"{__name__}:FailingPass")
    with pytest.raises(ExportError, match=r"^passes\.0 \(failing\) failed: export failed: nope$"):
        _build(tiny_model(), fast_recipe([{"type": "failing"}]), tmp_path / "out")


def test_runner_error_keeps_a_message_it_cannot_prefix_and_adds_a_note():
    from hfexport.build.runner import _named

    error = OSError(28, "No space left on device")
    assert _named(error, "passes.1 (optimize) failed after export_onnx") is error
    assert str(error) == "[Errno 28] No space left on device"
    assert error.__notes__ == ["passes.1 (optimize) failed after export_onnx"]


def test_runner_interrupted_cache_write_is_never_used(tiny_model, fast_recipe, tmp_path, monkeypatch):
    import shutil

    from hfexport.build import cache as module

    real = shutil.copytree

    def copy_then_die(source, target, **kwargs):
        real(source, target, **kwargs)
        raise KeyboardInterrupt  # after the copy, before entry.json and the rename

    recipe = fast_recipe(gates={"cosine_min": 0.5})
    monkeypatch.setattr(module.shutil, "copytree", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        _build(tiny_model(), recipe, tmp_path / "a")
    monkeypatch.setattr(module.shutil, "copytree", real)
    assert _entries() == []  # only a temporary folder, which no key names
    second, _ = _build(tiny_model(), recipe, tmp_path / "b")
    third, _ = _build(tiny_model(), recipe, tmp_path / "c")
    assert _cached(second) == [False, False] and _cached(third) == [True, True]


def test_runner_damaged_entry_is_a_miss_and_is_removed(tiny_model, fast_recipe, tmp_path):
    recipe = fast_recipe(gates={"cosine_min": 0.5})
    _build(tiny_model(), recipe, tmp_path / "a")
    entries = _entries()
    damaged = next(e for e in entries if json.loads((e / "entry.json").read_text())["name"] == "optimize")
    model = damaged / "stage" / "model.onnx"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes()[:100])  # truncated, as a full disk or a crash would leave it
    second, _ = _build(tiny_model(), recipe, tmp_path / "b")
    assert _cached(second) == [True, False]
    assert _sha(tmp_path / "b" / "model.onnx") == _sha(tmp_path / "a" / "model.onnx")


def test_cli_build_no_cache(tiny_model, fast_recipe, tmp_path):
    from click.testing import CliRunner

    from hfexport.cli import main

    recipe = fast_recipe(gates={"cosine_min": 0.5})
    args = ["build", "--model", str(tiny_model()), "--recipe", str(recipe), "--log-format", "json"]
    first = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "a")], catch_exceptions=False)
    second = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "b"), "--no-cache"],
                                catch_exceptions=False)
    assert first.exit_code == second.exit_code == 0
    cached = [json.loads(line).get("cached") for line in second.output.splitlines() if '"done"' in line]
    assert cached[:2] == [False, False]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["passes"][0]["cached"] is False


def test_runner_stores_only_artifacts_that_round_trip(tmp_path):
    from hfexport.artifacts import OnnxModel
    from hfexport.build.cache import StageCache

    cache = StageCache(tmp_path / "cache", max_bytes=10**9)
    stage = tmp_path / "01-optimize"
    stage.mkdir()
    (stage / "model.onnx").write_bytes(b"graph")
    plain = OnnxModel(stage / "model.onnx", ("input_ids",), ("last_hidden_state",), stats={"nodes": 3, "f": 0.1})
    assert cache.store("a" * 64, "optimize", plain, stage, 1.0)
    found, entry = cache.lookup("a" * 64)
    assert found == OnnxModel(tmp_path / "cache" / "stages" / ("a" * 64) / "stage" / "model.onnx",
                              ("input_ids",), ("last_hidden_state",))
    assert found.stats == plain.stats and entry["name"] == "optimize"
    # A tuple would come back as a list: not stored, rather than reused as something else.
    assert not cache.store("b" * 64, "optimize", OnnxModel(stage / "model.onnx", stats={"width": (1, 2)}), stage, 1.0)
    outside = OnnxModel(tmp_path / "elsewhere.onnx")
    assert not cache.store("c" * 64, "optimize", outside, stage, 1.0)
    assert cache.lookup("b" * 64) is None and cache.lookup("c" * 64) is None
