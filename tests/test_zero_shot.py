"""zero-shot-classification: a task added as two files (hfexport/tasks/ and hfexport/runtime/tasks/)."""

from __future__ import annotations

import numpy as np
import pytest

from hfexport.errors import ModelLoadError
from hfexport.progress import Progress
from tests.conftest import _bert_tokenizer

NLI_LABELS = ["contradiction", "neutral", "entailment"]


def _nli_model(folder, labels=NLI_LABELS):
    import torch
    import transformers

    folder.mkdir(parents=True)
    tokenizer = _bert_tokenizer(folder)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                                     id2label=dict(enumerate(labels)),
                                     label2id={v: i for i, v in enumerate(labels)})
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def zero_shot_bundle(tmp_path_factory):
    from hfexport.api import build

    root = tmp_path_factory.mktemp("zero-shot")
    model = _nli_model(root / "nli")
    recipe = root / "fast.yaml"
    recipe.write_text('{"schema_version": 1, "passes": [{"type": "export"}, {"type": "optimize"}], '
                      '"evaluation": {"samples": 16, "batch_size": 4, "latency_runs": 5, "sequence_length": 32, '
                      '"memory": false}}')
    result = build(str(model), task="zero-shot-classification", recipe=str(recipe), output=root / "bundle",
                   progress=Progress("quiet"))
    return model, result


def test_zero_shot_build_validates_and_records_the_nli_labels(zero_shot_bundle):
    _, result = zero_shot_bundle
    assert result.report.passed and result.report.summary["top1_agreement"] == 1.0
    assert result.manifest.model.task == "zero-shot-classification"
    assert result.manifest.model.task_fields == {"entailment_id": 2, "contradiction_id": 0}


def test_zero_shot_runtime_ranks_labels_as_pytorch_entailment_does(zero_shot_bundle):
    import torch
    import transformers

    from hfexport.runtime import load

    model_dir, result = zero_shot_bundle
    labels = ["sports", "cooking", "travel"]
    got = load(result.bundle)(["The team won the final.", "Boil the pasta."], candidate_labels=labels)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    for row in got:
        enc = tokenizer([row["sequence"]] * 3, [f"This example is {label}." for label in labels],
                        return_tensors="pt", padding=True)
        with torch.inference_mode():
            entail = model(**enc).logits[:, 2]
        want = torch.softmax(entail, 0).numpy()
        assert row["labels"][0] == labels[int(want.argmax())]
        np.testing.assert_allclose(sorted(row["scores"], reverse=True), sorted(want, reverse=True), atol=1e-5)
        assert abs(sum(row["scores"]) - 1) < 1e-5


def test_zero_shot_multi_label_scores_each_label_on_its_own(zero_shot_bundle):
    from hfexport.runtime import load

    row = load(zero_shot_bundle[1].bundle)("A rainy day in Paris.", candidate_labels=["weather", "travel"],
                                           multi_label=True)[0]
    assert all(0 < s < 1 for s in row["scores"]) and abs(sum(row["scores"]) - 1) > 1e-6


def test_zero_shot_runtime_refuses_a_call_without_labels(zero_shot_bundle):
    from hfexport.runtime import load

    with pytest.raises(ValueError, match="candidate_labels"):
        load(zero_shot_bundle[1].bundle)("some text")


def test_zero_shot_build_refuses_a_model_without_entailment_labels(tmp_path):
    from hfexport.api import build

    model = _nli_model(tmp_path / "sentiment", labels=["negative", "positive"])
    with pytest.raises(ModelLoadError, match="entailment and contradiction"):
        build(str(model), task="zero-shot-classification", output=tmp_path / "out", progress=Progress("quiet"))


def test_zero_shot_cli_run_takes_labels(zero_shot_bundle):
    import json

    from click.testing import CliRunner

    from hfexport.cli import main

    result = CliRunner().invoke(main, ["run", str(zero_shot_bundle[1].bundle), "Goal in the last minute.",
                                       "--label", "sports", "--label", "cooking"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.split(": ", 1)[1])
    assert sorted(row["labels"]) == ["cooking", "sports"]


def test_zero_shot_a_text_past_max_length_gives_way_not_the_hypothesis(zero_shot_bundle, tmp_path):
    """A long text with a short hypothesis: cutting only the hypothesis (question answering's rule) cannot make room
    and the tokenizer refused the pair; the text is cut instead, in the runtime and in validation alike."""
    from hfexport.api import validate_bundle
    from hfexport.runtime import load

    _, result = zero_shot_bundle
    long_text = " ".join(["the team won the final again"] * 60)  # far past the model's 128 positions
    got = load(result.bundle)([long_text], candidate_labels=["sports", "cooking"])
    assert {item["labels"][0] for item in got} <= {"sports", "cooking"}
    data = tmp_path / "long.jsonl"
    data.write_text("".join(f'{{"text": "{long_text} {i}"}}\n' for i in range(16)))
    report = validate_bundle(result.bundle, eval_data=data, report_dir=tmp_path / "r", progress=Progress("quiet"))
    assert report.stages[-1].fidelity["top1_agreement"] >= 0.9
