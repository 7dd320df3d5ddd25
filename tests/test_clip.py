"""Image-text dual encoders (CLIP, SigLIP) end to end: tiny random-init models (scripts/coverage_models.py's dual
rows: a CLIP-style BPE tokenizer and a T5-style one trained with `tokenizers`, the families' image processors)
inferred as zero-shot-image-classification, built on cpu and openvino as two graphs, checked against PyTorch and
transformers' zero-shot-image-classification pipeline, and run torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hfexport.data import synthetic_image
from tests.conftest import TORCH_BLOCKER, assert_thread_safe

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
FP32_RECIPE = {"schema_version": 1, "gates": {"cosine_min": 0.9999, "top1_agreement": 1.0},
               "passes": [{"type": "export"}, {"type": "optimize"}],
               "evaluation": {"samples": 16, "batch_size": 8, "latency_runs": 5, "memory": False}}
LABELS = ["a cat", "a dog", "a red square", "a blue circle", "noise"]


@pytest.fixture(scope="session")
def dual_model(tmp_path_factory):
    """dual_model("clip" | "siglip") -> a saved tiny model folder (the coverage matrix's maker)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import coverage_models
    finally:
        sys.path.remove(str(SCRIPTS))
    cache: dict = {}

    def factory(arch: str) -> Path:
        if arch not in cache:
            folder = tmp_path_factory.mktemp(arch) / "model"
            coverage_models._dual(arch)(folder)
            cache[arch] = folder
        return cache[arch]

    return factory


@pytest.fixture(scope="session")
def dual_bundle(dual_model, tmp_path_factory):
    """dual_bundle(arch, target, recipe) -> a bundle: recipe "fp32" (export + optimize, fp32 gates) or
    "default" (the target's int8, --validation quick); one build per request."""
    from hfexport.api import build
    from hfexport.progress import Progress

    recipe = tmp_path_factory.mktemp("dual-recipe") / "fp32.yaml"
    recipe.write_text(json.dumps(FP32_RECIPE))
    cache: dict = {}

    def factory(arch: str = "clip", target: str = "cpu", which: str = "fp32"):
        key = (arch, target, which)
        if key not in cache:
            out = tmp_path_factory.mktemp("dual-bundles") / "-".join(key)
            options = {"recipe": str(recipe)} if which == "fp32" else {"validation": "quick"}
            cache[key] = build(str(dual_model(arch)), target=target, output=out, progress=Progress("quiet"),
                               **options)
        return cache[key]

    return factory


@pytest.mark.parametrize("arch", ["clip", "siglip"])
def test_dual_encoder_folder_is_inferred_as_zero_shot_image_classification(dual_model, arch):
    from hfexport.tasks import get_task, infer_task_from_folder

    assert infer_task_from_folder(dual_model(arch)) == "zero-shot-image-classification"
    assert get_task("image-text-embedding").name == "zero-shot-image-classification"


def _torch_reference(folder: Path, images: list, texts: list[str]):
    """transformers' own embeddings and its zero-shot pipeline's ranking for the first image."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, pipeline

    model = AutoModel.from_pretrained(str(folder)).eval()
    processor, tokenizer = AutoImageProcessor.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))
    siglip = model.config.model_type == "siglip"
    padding = {"padding": "max_length", "max_length": 64, "truncation": True} if siglip else {"padding": True}
    with torch.inference_mode():
        image = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output.numpy()
        text = model.get_text_features(**tokenizer(texts, return_tensors="pt", **padding)).pooler_output.numpy()
    classify = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer, image_processor=processor)
    from PIL import Image

    ranked = classify(Image.fromarray(images[0]), candidate_labels=LABELS)
    return image, text, ranked


@pytest.mark.parametrize("target", ["cpu", "openvino"])
@pytest.mark.parametrize("arch", ["clip", "siglip"])
def test_fp32_bundle_equals_pytorch_and_the_transformers_pipeline(dual_bundle, dual_model, arch, target):
    from hfexport.runtime import load

    result = dual_bundle(arch, target)
    fidelity = result.report.stages[-1].fidelity
    assert result.report.passed
    assert fidelity["image_cosine_min"] >= 0.9999 and fidelity["text_cosine_min"] >= 0.9999
    assert fidelity["top1_agreement"] == 1.0
    manifest = result.manifest
    assert manifest.tokenizer.file == "tokenizer/tokenizer.json" and manifest.processor.kind == "image"
    assert len({Path(name).stem for name in manifest.model_files}) == 2  # image_model and text_model
    assert manifest.model.task_fields["score"] == ("sigmoid" if arch == "siglip" else "softmax")

    images = [synthetic_image(5000 + i) for i in range(3)]
    texts = ["This is a photo of a cat.", "a dog", "Zebra crossing, #42!"]
    want_image, want_text, want_ranked = _torch_reference(dual_model(arch), images, texts)
    model = load(result.bundle)
    np.testing.assert_allclose(model.embed_image(images), want_image, atol=1e-4)
    np.testing.assert_allclose(model.embed_text(texts), want_text, atol=1e-4)
    got = model(images[0], candidate_labels=LABELS)[0]
    assert [r["label"] for r in got] == [r["label"] for r in want_ranked]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want_ranked], atol=1e-5)
    if arch == "siglip":  # padded to 64 tokens, as SiglipProcessor's pipeline pads
        assert model.text_encoder.encode(["a"]).input_ids.shape == (1, 64)
    long_text = " ".join(["a photo of a zebra crossing at night"] * 40)  # far past the text tower's positions
    assert model.text_encoder.encode([long_text]).input_ids.shape[1] <= manifest.model.task_fields["text_max_length"]
    assert model.embed_text([long_text]).shape == (1, want_text.shape[1])


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cpu", "openvino"])
@pytest.mark.parametrize("arch", ["clip", "siglip"])
def test_default_int8_passes_the_task_gates(dual_bundle, arch, target):
    result = dual_bundle(arch, target, "default")
    fidelity = result.report.stages[-1].fidelity
    assert result.manifest.target.precision == "int8" and result.report.passed
    assert fidelity["image_cosine_min"] >= 0.98 and fidelity["text_cosine_min"] >= 0.98
    assert fidelity["top1_agreement"] >= 0.8
    quantize = next(p for p in result.manifest.passes if p.name == "quantize")
    assert set(quantize.stats["graphs"]) == {"image_model", "text_model"}  # each tower quantised on its own


_ISOLATED = TORCH_BLOCKER + """
import numpy as np
from hfexport.runtime import load
model = load(sys.argv[1])
image = model.embed_image([sys.argv[2], sys.argv[2]])
text = model.embed_text(["This is a photo of a cat.", "This is a photo of a dog."])  # the default template
ranked = model(sys.argv[2], candidate_labels=["a cat", "a dog"])
scores = model.scores(image[:1], text)[0].tolist()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"image": list(image.shape), "text": list(text.shape), "labels": len(ranked[0]),
                  "same": bool(np.allclose(sorted(scores, reverse=True), [r["score"] for r in ranked[0]], atol=1e-6)),
                  "heavy": heavy}))
"""


def test_runtime_embeds_and_classifies_without_torch_or_transformers(dual_bundle, tmp_path):
    from PIL import Image

    result = dual_bundle("clip", "cpu")
    Image.fromarray(synthetic_image(7)).save(tmp_path / "x.png")
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(result.bundle), str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"image": [2, 16], "text": [2, 16], "labels": 2,
                                                               "same": True, "heavy": []}


@pytest.mark.parametrize(("call", "message"), [
    ({}, "needs candidate_labels"),
    ({"candidate_labels": []}, "needs candidate_labels"),
    ({"candidate_labels": ["a cat"], "hypothesis_template": "no slot"}, "needs a {}"),
])
def test_bad_call_is_one_value_error_line(dual_bundle, call, message):
    from hfexport.runtime import load

    model = load(dual_bundle("clip", "cpu").bundle)
    with pytest.raises(ValueError, match=message) as info:
        model(synthetic_image(1), **call)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="a string or a list of strings"):
        model.embed_text([1, 2])


def test_serve_refuses_a_dual_encoder_bundle_in_one_line(dual_bundle):
    pytest.importorskip("uvicorn")
    bundle = dual_bundle("clip", "cpu").bundle
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "serve", str(bundle), "--port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no route for zero-shot-image-classification bundles" in out.stderr


def test_tpu_target_refuses_a_dual_encoder_at_plan_time(dual_model, tmp_path):
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "build", "-m", str(dual_model("clip")),
                          "--target", "tpu", "-o", str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "unexpected" not in out.stderr
    assert "does not export image models yet" in out.stderr and not (tmp_path / "b").exists()


def test_cli_run_ranks_labels_for_an_image_and_asks_for_labels(dual_bundle, tmp_path):
    from PIL import Image

    bundle = str(dual_bundle("clip", "cpu").bundle)
    Image.fromarray(synthetic_image(8)).save(tmp_path / "x.png")
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "run", bundle, str(tmp_path / "x.png"),
                          "--label", "a cat", "--label", "a dog", "--label", "noise", "--top-k", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ranked = json.loads(out.stdout.split(": ", 1)[1])
    assert len(ranked) == 2 and ranked[0]["score"] >= ranked[1]["score"]
    assert {r["label"] for r in ranked} <= {"a cat", "a dog", "noise"}
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "run", bundle, str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "needs --label" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_labelled_image_folders_give_zero_shot_accuracy_and_static_int8_calibrates_each_tower(dual_model, tmp_path):
    """--eval-data class folders: zero-shot accuracy with the folder names as labels, on PyTorch and the bundle;
    --calibration-data images calibrate the image tower, the shipped text the text tower (static int8)."""
    from PIL import Image

    from hfexport.api import build
    from hfexport.progress import Progress

    for index in range(12):
        label = ("red", "blue", "green")[index % 3]
        (tmp_path / "eval" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_image(500 + index)).save(tmp_path / "eval" / label / f"{index}.png")
        (tmp_path / "calib").mkdir(exist_ok=True)
        Image.fromarray(synthetic_image(700 + index)).save(tmp_path / "calib" / f"{index}.jpg")
    recipe = dict(FP32_RECIPE, gates={}, passes=[{"type": "export"},
                                                 {"type": "quantize", "precision": "int8", "mode": "static"}])
    (tmp_path / "static.yaml").write_text(json.dumps(recipe))
    result = build(str(dual_model("clip")), target="cpu", recipe=str(tmp_path / "static.yaml"),
                   output=tmp_path / "bundle", calibration_data=str(tmp_path / "calib"),
                   eval_data=str(tmp_path / "eval"), progress=Progress("quiet"), gates=False)
    graphs = next(p for p in result.manifest.passes if p.name == "quantize").stats["graphs"]
    assert graphs["image_model"]["calibration_samples"] == 12 and graphs["text_model"]["calibration_samples"] > 12
    stages = result.report.stages
    for stage in (stages[0], stages[-1]):
        assert 0.0 <= stage.task_metrics["zero_shot_accuracy"] <= 1.0
    assert result.report.evaluation.labelled_examples == 12


@pytest.mark.slow
def test_peak_memory_is_measured_for_the_image_tower_on_both_sides(dual_model, tmp_path):
    from hfexport.api import build
    from hfexport.progress import Progress

    recipe = dict(FP32_RECIPE, evaluation=dict(FP32_RECIPE["evaluation"], memory=True))
    (tmp_path / "memory.yaml").write_text(json.dumps(recipe))
    result = build(str(dual_model("clip")), target="cpu", recipe=str(tmp_path / "memory.yaml"),
                   output=tmp_path / "bundle", progress=Progress("quiet"))
    peaks = {stage.name: stage.peak_rss_mb for stage in result.report.stages}
    assert all(isinstance(peak, float) and peak > 0 for peak in peaks.values()), peaks
    assert peaks["bundle"] < peaks["pytorch"]  # the bundle's process imports neither torch nor transformers


def test_explicit_tasks_that_do_not_fit_are_refused_in_one_line(dual_model, tmp_path):
    import transformers

    from hfexport.errors import ModelLoadError
    from hfexport.loading import resolve_model

    transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=64, architectures=["ViTModel"]).save_pretrained(str(tmp_path / "vit"))
    with pytest.raises(ModelLoadError, match="not an image-text dual encoder") as info:
        resolve_model(str(tmp_path / "vit"), task="zero-shot-image-classification")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="reading images and text.*leave out --task"):
        resolve_model(str(dual_model("clip")), task="image-classification")
    assert resolve_model(str(dual_model("clip")), task="image-text-embedding").task == "zero-shot-image-classification"


def test_distillation_is_refused_at_plan_time(dual_model, tmp_path):
    (tmp_path / "distill.yaml").write_text(json.dumps({"schema_version": 1, "passes": [{"type": "distill"},
                                                                                       {"type": "export"}]}))
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "build", "-m", str(dual_model("clip")), "--target",
                          "cpu", "--recipe", str(tmp_path / "distill.yaml"), "-o", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "unexpected" not in out.stderr
    assert "distillation has no loss for task 'zero-shot-image-classification'" in out.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_recipe_auto_times_dual_encoder_candidates_with_labels(dual_model, tmp_path):
    """--recipe auto times the passing candidates as an app calls them (an image against labels); it called every
    bundle with a text before, which no image bundle takes."""
    out = tmp_path / "auto"
    done = subprocess.run([sys.executable, "-m", "hfexport.cli", "build", "-m", str(dual_model("clip")), "--target",
                           "cpu", "--recipe", "auto", "--validation", "quick", "-q", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    search = json.loads((tmp_path / "auto.search" / "search.json").read_text())
    timed = [c for c in search["candidates"] if c["latency_ms"] is not None]
    assert timed and json.loads((out / "manifest.json").read_text())["recipe"]["name"] == search["chosen"]


def test_validate_rechecks_a_bundle_against_pytorch(dual_bundle, tmp_path):
    from hfexport.api import validate_bundle
    from hfexport.progress import Progress

    report = validate_bundle(dual_bundle("siglip", "cpu").bundle, report_dir=tmp_path / "r", progress=Progress("quiet"))
    fidelity = report.stages[-1].fidelity
    assert report.passed and fidelity["cosine_min"] >= 0.9999 and fidelity["top1_agreement"] == 1.0
    assert (tmp_path / "r" / "report.json").is_file()


def test_embeddings_are_thread_safe(dual_bundle):
    from concurrent.futures import ThreadPoolExecutor

    from hfexport.runtime import load

    model = load(dual_bundle("siglip", "cpu").bundle)
    assert_thread_safe(model.embed_text)  # the fixed-length SigLIP tokenizer and the text graph
    images = [synthetic_image(900 + i) for i in range(8)]
    expected = [model.embed_image(image)[0] for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda image: model.embed_image(image)[0], images * 3))
    for index, vector in enumerate(got):
        np.testing.assert_allclose(vector, expected[index % len(images)], atol=1e-5)
