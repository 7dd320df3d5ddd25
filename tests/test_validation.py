"""Validation: labelled task metrics in every data format, planted errors stopped by gates,
the report schema, and `validate` of a moved bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hfexport.errors import FidelityError
from hfexport.progress import Progress
from hfexport.report.schema import Report
from tests.conftest import INT8_PASSES

LABELLED = [{"text": f"review {i}: the film was {'great' if i % 2 else 'dull'}", "label": ["negative", "positive"][i % 2]}
            for i in range(12)]


def _write(rows, path):
    suffix = path.suffix if path.suffix else ""
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif suffix == ".csv":
        keys = list(rows[0])
        path.write_text("\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["eval.jsonl", "eval.csv", "eval.parquet", "eval-dataset"])
def test_task_metrics_from_each_format_reference_and_bundle(tiny_model, fast_recipe, tmp_path, name):
    from hfexport.api import build

    data = _write(LABELLED, tmp_path / name)
    result = build(str(tiny_model("bert", "text-classification")), recipe=str(fast_recipe()), output=tmp_path / "b",
                   eval_data=data, label_column="label", progress=Progress("quiet"))
    report = result.report
    assert report.evaluation.labelled_examples == 12
    reference, bundle = report.stage("pytorch").task_metrics, report.stage("bundle").task_metrics
    assert set(reference) == {"accuracy", "macro_f1"} and reference == pytest.approx(bundle, abs=1e-6)
    assert 0 <= reference["accuracy"] <= 1


def test_sts_pairs_report_spearman(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    rows = [{"sentence1": f"a cat sat {i}", "sentence2": f"a cat sat down {i}" if i % 2 else "stock prices fell",
             "score": float(i % 2) * 5} for i in range(10)]
    result = build(str(tiny_model()), recipe=str(fast_recipe()), output=tmp_path / "sts",
                   eval_data=_write(rows, tmp_path / "sts.jsonl"), progress=Progress("quiet"))
    assert "sts_spearman" in result.report.stage("bundle").task_metrics
    assert result.report.stage("bundle").fidelity["cosine_min"] > 0.9999


def test_question_answering_exact_match(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    rows = [{"question": "Who wrote it?", "context": "Ada Lovelace wrote the first program.", "answer": "Ada Lovelace"}
            for _ in range(4)]
    result = build(str(tiny_model("bert", "question-answering")), recipe=str(fast_recipe()), output=tmp_path / "qa",
                   task="question-answering", eval_data=_write(rows, tmp_path / "qa.jsonl"),
                   progress=Progress("quiet"))
    metrics = result.report.stage("bundle").task_metrics
    assert set(metrics) == {"exact_match", "f1"}
    assert metrics == result.report.stage("pytorch").task_metrics


class ZeroLayerPass:
    """A planted error: an "optimisation" that zeroes the word-embedding table.

    NOTE: zeroing a whole transformer layer of a tiny random-init model barely moves its output (the
    residual stream is dominated by the embeddings at init scale 0.02), so the planted error is here.
    """


def _zeroing_pass():
    import onnx
    from onnx import numpy_helper

    from hfexport.artifacts import OnnxModel
    from hfexport.passes.base import Pass, PassConfig

    class ZeroLayer(Pass):
        name, summary, consumes, produces, config_class = "zero_layer", "planted error", OnnxModel, OnnxModel, PassConfig

        def run(self, artifact, ctx):
            model = onnx.load(str(artifact.path))
            weights = {init.name: init for init in model.graph.initializer}
            table = next(weights[n.input[0]] for n in model.graph.node
                         if n.op_type == "Gather" and n.input[1] == "input_ids" and n.input[0] in weights)
            table.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(table)), table.name))
            out = ctx.stage_dir(self.name) / "model.onnx"
            onnx.save(model, str(out))
            return OnnxModel(out, artifact.inputs, artifact.outputs)

    return ZeroLayer


def test_default_gates_stop_planted_zeroed_layer(tiny_model, fast_recipe, tmp_path, monkeypatch):
    import hfexport.passes as registry
    from hfexport.api import build

    globals()["ZeroLayerPass"] = _zeroing_pass()
    monkeypatch.setitem(registry._catalog(), "zero_layer", f"{__name__}:ZeroLayerPass")
    recipe = fast_recipe([{"type": "export_onnx"}, {"type": "zero_layer"}])  # default gates: no overrides
    with pytest.raises(FidelityError, match="fidelity gate failed: cosine_mean") as caught:
        build(str(tiny_model()), recipe=str(recipe), output=tmp_path / "broken", progress=Progress("quiet"))
    assert not (tmp_path / "broken").exists()
    report = Report.model_validate_json((tmp_path / "broken.failed-report" / "report.json").read_text())
    assert report.passed is False and report.stage("export_onnx").fidelity["cosine_min"] > 0.9999
    assert caught.value.failures[0]["value"] < caught.value.failures[0]["threshold"]


def test_report_json_round_trips_through_schema(built_bundle):
    bundle = built_bundle("bert", "feature-extraction", passes=INT8_PASSES, gates={"cosine_min": 0.5}, memory=True)
    text = (bundle / "report" / "report.json").read_text()
    report = Report.model_validate_json(text)
    assert Report.model_validate_json(report.model_dump_json()) == report
    assert [s.name for s in report.stages] == ["pytorch", "export_onnx", "optimize", "bundle"]
    for stage in report.stages:
        assert stage.latency and stage.latency.runs == 5 and stage.throughput_per_s > 0
        assert stage.peak_rss_mb and stage.peak_rss_mb > 10
    assert report.host.isas and report.host.versions["onnxruntime"]
    # the bundle once more one input at a time (evaluation batch 4): dynamic int8 ranges depend on the batch
    bundle_stage = report.stages[-1]
    assert set(bundle_stage.fidelity_batch1) == set(bundle_stage.fidelity)
    assert not any(s.fidelity_batch1 for s in report.stages[:-1])
    assert any("batch 1" in note for note in bundle_stage.notes)
    for metric in ("cosine_mean", "cosine_min"):
        assert report.summary[metric] == min(bundle_stage.fidelity[metric], bundle_stage.fidelity_batch1[metric])


def test_gates_judge_the_worse_of_the_evaluation_batch_and_batch_1():
    from hfexport.validation.metrics import check_gates, worst_fidelity

    batched = {"cosine_mean": 0.995, "cosine_min": 0.980, "similarity_spearman": 0.99}
    alone = {"cosine_mean": 0.996, "cosine_min": 0.970, "similarity_spearman": 0.50}
    judged = worst_fidelity("feature-extraction", batched, alone)
    assert judged == {"cosine_mean": 0.995, "cosine_min": 0.970, "similarity_spearman": 0.99}  # not gated: as is
    assert [g.passed for g in check_gates("feature-extraction", {}, judged)] == [True, False]
    assert worst_fidelity("feature-extraction", batched, {}) == batched  # batch 1 evaluation: nothing to add


def test_validate_moved_bundle_writes_fresh_report(built_bundle, tmp_path):
    from hfexport.api import validate_bundle

    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(built_bundle("bert", "feature-extraction"), moved)
    report = validate_bundle(moved, progress=Progress("quiet"))
    assert report.passed and report.stage("bundle").fidelity["cosine_min"] > 0.9999
    assert (tmp_path / "elsewhere" / "bundle.validation" / "report.html").is_file()


def test_cli_validate_exit_code_follows_gates(built_bundle, tmp_path):
    from click.testing import CliRunner

    from hfexport.cli import main

    result = CliRunner().invoke(main, ["validate", str(built_bundle("bert", "feature-extraction")), "--quiet",
                                       "--report-dir", str(tmp_path / "r")])
    assert result.exit_code == 0 and result.output.startswith("passed")


def test_token_classification_word_metrics_from_conll_rows(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    rows = [{"tokens": ["Ada", "Lovelace", "visited", "London", "today"],
             "ner_tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]} for _ in range(6)]
    result = build(str(tiny_model("bert", "token-classification")), recipe=str(fast_recipe()),
                   output=tmp_path / "ner", task="token-classification",
                   eval_data=_write(rows, tmp_path / "ner.jsonl"), progress=Progress("quiet"))
    reference, bundle = result.report.stage("pytorch").task_metrics, result.report.stage("bundle").task_metrics
    assert set(reference) == {"word_accuracy", "entity_f1"}
    assert reference == pytest.approx(bundle, abs=1e-6)


def test_entities_from_bio_tags_match_seqeval_counting():
    from hfexport.tasks._labelled import _entities, token_classification

    assert _entities(["B-PER", "I-PER", "O", "B-LOC", "I-PER", "O"]) == {("PER", 0, 1), ("LOC", 3, 3), ("PER", 4, 4)}
    gold = [{"spans": [(0, 3), (4, 12), (13, 19)], "tags": ["B-PER", "I-PER", "O"]}]
    # Sub-word tokens: "Love" + "lace" for the second word; only the first sub-word's label counts.
    predicted = [[(0, 3, 1), (4, 8, 2), (8, 12, 0), (13, 19, 0)]]
    metrics = token_classification(predicted, gold, {"0": "O", "1": "B-PER", "2": "I-PER"})
    assert metrics == {"word_accuracy": 1.0, "entity_f1": 1.0}


def test_time_alternating_settles_each_block_untimed_and_alternates():
    from hfexport.validation.timing import time_alternating

    calls: list[str] = []
    times = time_alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=4,
                             warmup=1, block=2, settle=1)
    assert [len(t) for t in times.values()] == [4, 4]
    # warm-up once each, then per block: one untimed settle call and two timed ones, sides alternating
    assert "".join(calls) == "ab" + "aaabbb" * 2


def test_timing_watch_flags_a_busy_host_and_noisy_calls(monkeypatch):
    import os

    from hfexport.validation.timing import LoadWatch

    steady = [10.0] * 20
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert LoadWatch().warnings({"pytorch": steady, "bundle": [3.0] * 20}) == []
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 20.0, 10.0))
    busy = LoadWatch().warnings({"pytorch": steady})
    assert len(busy) == 1 and busy[0].startswith("host busy: load average 40.0 on")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    noisy = LoadWatch().warnings({"pytorch": [10.0] * 15 + [40.0] * 5})
    assert noisy == ["noisy timings: pytorch's p90 is 4.0x its median"]


def test_report_gives_no_speed_ratio_when_timing_was_disturbed():
    from hfexport.report.html import render_html
    from tests.test_report_html import _report

    report = _report()
    assert report.speed_phrase().endswith("x faster")
    report.timing_warnings = ["host busy: load average 40.0 on 2 cores while timing"]
    assert report.speed_phrase() == "speed ratio unreliable (host busy: load average 40.0 on 2 cores while timing)"
    page = render_html(report)
    assert "speed ratio unreliable" in page and "faster than PyTorch" not in page
