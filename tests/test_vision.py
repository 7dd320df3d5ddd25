"""Image tasks end to end: tiny random-init vision models (ViT, ConvNeXt, ResNet, ...) built for cpu and
openvino, the torch-free image preprocessing checked against transformers' own processors, image inputs of
every accepted kind, the CLI, and the DeBERTa-v3 export fix (type_vocab_size 0)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from hfexport.data import synthetic_image
from tests.conftest import TORCH_BLOCKER
from tests.vision_models import LABELS, _processor, make_tiny_vision_model

FAST_RECIPE = {"schema_version": 1, "gates": {},
               "passes": [{"type": "export"}, {"type": "optimize"}, {"type": "quantize", "precision": "int8"}],
               "evaluation": {"samples": 64, "batch_size": 8, "latency_runs": 5, "sequence_length": 32,
                              "memory": False}}


@pytest.fixture(scope="session")
def vision_model(tmp_path_factory):
    cache: dict = {}

    def factory(family: str, task: str = "image-classification") -> Path:
        if (family, task) not in cache:
            cache[family, task] = make_tiny_vision_model(tmp_path_factory.mktemp(f"{family}-{task}"), family, task)
        return cache[family, task]

    return factory


@pytest.fixture(scope="session")
def vision_bundle(vision_model, tmp_path_factory):
    """vision_bundle(family, task, target) -> a bundle built with the default passes (export, optimize on
    ONNX, int8) and a short evaluation; one build per request."""
    from hfexport.api import build
    from hfexport.progress import Progress

    recipe = tmp_path_factory.mktemp("vision-recipe") / "fast.yaml"
    recipe.write_text(json.dumps(FAST_RECIPE))
    cache: dict = {}

    def factory(family="vit", task="image-classification", target="cpu") -> Path:
        key = (family, task, target)
        if key not in cache:
            out = tmp_path_factory.mktemp("vision-bundles") / "-".join(key)
            build(str(vision_model(family, task)), target=target, recipe=str(recipe), output=out,
                  progress=Progress("quiet"))
            cache[key] = out
        return cache[key]

    return factory


# -- preprocessing: the runtime against transformers ---------------------------------------------------------


@pytest.mark.parametrize("family", ["vit", "deit", "convnext", "dinov2", "mobilenet_v2", "efficientnet"])
def test_runtime_preprocessing_equals_transformers_processor(family, tmp_path):
    """Max abs difference to the family's transformers image processor (PIL backend): 0 on images of several
    sizes and both orientations (the same Pillow resize, then the same float64 rescale and float32 normalize)."""
    from hfexport.runtime.image import ImageEncoder, explicit_config

    processor = _processor(family)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(explicit_config(processor)))
    encoder = ImageEncoder(tmp_path / "preprocessor_config.json")
    images = [synthetic_image(i, size) for i, size in enumerate([(40, 60), (75, 31), (32, 32), (17, 90)])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = processor(images=images, return_tensors="np")["pixel_values"]
    got = encoder.encode(images).pixel_values
    assert got.dtype == np.float32 and got.shape == want.shape == (4, 3, 32, 32)
    assert float(np.abs(got - want).max()) <= 1e-6


def test_synthetic_images_are_deterministic_and_varied():
    first, again = synthetic_image(3), synthetic_image(3)
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    np.testing.assert_array_equal(first, again)
    assert len({synthetic_image(i).shape for i in range(10)}) > 3  # sizes vary: resizing and cropping run


# -- builds: one tiny model per family and target ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["cpu", "openvino"])
@pytest.mark.parametrize("family", ["vit", "convnext", "resnet"])
def test_image_classification_builds_validates_and_runs(vision_bundle, family, target, tmp_path):
    from PIL import Image

    from hfexport.runtime import load

    bundle = vision_bundle(family, "image-classification", target)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["tokenizer"] is None
    assert manifest["processor"] == {"kind": "image", "file": "processor/preprocessor_config.json",
                                     "input_name": "pixel_values", "image_size": [32, 32]}
    assert [i["name"] for i in manifest["signature"]["inputs"]] == ["pixel_values"]
    assert manifest["signature"]["inputs"][0]["shape"][1:] == [3, 32, 32]
    assert manifest["validation"]["passed"] and manifest["target"]["precision"] == "int8"
    assert manifest["validation"]["gates"] == [{"metric": "top1_agreement", "threshold": 0.9, "passed": True,
                                                "value": manifest["validation"]["summary"]["top1_agreement"]}]
    assert not (bundle / "tokenizer").exists()

    model = load(bundle)
    image = synthetic_image(7)
    Image.fromarray(image).save(tmp_path / "picture.png")
    model(image)  # NOTE: ONNX Runtime's first int8 call on a session can differ from later ones by ~5e-4
    by_array = model(image)
    assert by_array[0]["label"] in LABELS and 0 < by_array[0]["score"] <= 1
    assert model(str(tmp_path / "picture.png")) == by_array
    assert model(Image.fromarray(image)) == by_array
    top = model([image, synthetic_image(8)], top_k=3)
    assert len(top) == 2 and [len(r) for r in top] == [3, 3]
    # dynamic int8 quantises a batch over one range (decision 0092): a neighbour moves a score slightly
    assert top[0][0]["label"] == by_array[0]["label"] and top[0][0]["score"] == pytest.approx(by_array[0]["score"], abs=5e-3)
    assert top[0][0]["score"] >= top[0][1]["score"] >= top[0][2]["score"]


@pytest.mark.parametrize("target", ["cpu", "openvino"])
@pytest.mark.parametrize("family", ["vit", "convnext", "resnet", "dinov2"])
def test_image_feature_extraction_builds_one_vector_per_image(vision_bundle, family, target):
    from hfexport.runtime import load

    bundle = vision_bundle(family, "image-feature-extraction", target)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["task"] == "image-feature-extraction" and manifest["validation"]["passed"]
    assert {g["metric"]: g["threshold"] for g in manifest["validation"]["gates"]} == {"cosine_mean": 0.99,
                                                                                      "cosine_min": 0.95}
    vectors = load(bundle)([synthetic_image(i) for i in range(3)])
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.shape == (3, 32)
    assert np.isfinite(vectors).all()


@pytest.mark.parametrize("family", ["deit", "dinov2", pytest.param("mobilenet_v2", marks=pytest.mark.slow),
                                    "efficientnet", "swin"])
def test_more_families_build_on_cpu(vision_bundle, family):
    """Built with the default gate (top-1 0.90), which a build below it fails."""
    bundle = vision_bundle(family, "image-classification", "cpu")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["validation"]["passed"] and manifest["signature"]["inputs"][0]["name"] == "pixel_values"


def test_efficientnet_whole_map_pool_exports_to_openvino(vision_model, tmp_path):
    """EfficientNet's AvgPool2d(hidden_dim, ceil_mode=True) is refused by OpenVINO; the export pools the whole
    map instead (the same numbers, checked against PyTorch), on a copy: the reference model is untouched."""
    import torch
    import transformers

    from hfexport.api import build
    from hfexport.backends._torch_graph import whole_map_pools
    from hfexport.progress import Progress

    model = transformers.AutoModelForImageClassification.from_pretrained(str(vision_model("efficientnet"))).eval()
    swapped = whole_map_pools(model)
    assert swapped is not model and isinstance(model.efficientnet.pooler, torch.nn.AvgPool2d)
    assert isinstance(swapped.efficientnet.pooler, torch.nn.AdaptiveAvgPool2d)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(swapped(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
    (tmp_path / "r.yaml").write_text(json.dumps(FAST_RECIPE))
    result = build(str(vision_model("efficientnet")), target="openvino", recipe=str(tmp_path / "r.yaml"),
                   output=tmp_path / "b", progress=Progress("quiet"), gates=False)
    export = next(p for p in result.manifest.passes if p.name == "export")
    assert export.stats["max_abs_diff_vs_torch"] < 1e-3
    assert result.report.stages[-1].fidelity["top1_agreement"] >= 0.8  # 0.91 on 128 images (decision 0140)


def test_bundle_matches_pytorch_through_transformers(vision_bundle, vision_model):
    """The runtime's probabilities against transformers' processor + the PyTorch model, image by image."""
    import torch
    import transformers

    bundle = vision_bundle("vit", "image-classification", "cpu")
    from hfexport.runtime import load

    model = load(bundle)
    images = [synthetic_image(100 + i) for i in range(6)]
    torch_model = transformers.AutoModelForImageClassification.from_pretrained(
        str(vision_model("vit"))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = transformers.AutoImageProcessor.from_pretrained(str(vision_model("vit")))(
            images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        want = torch.softmax(torch_model(pixel_values=pixels).logits, -1).numpy()
    got = model(images, top_k=None)
    got_probs = np.array([[next(r["score"] for r in row if r["label"] == name) for name in LABELS] for row in got])
    assert float(np.abs(got_probs - want).max()) < 0.02  # int8 weights


# -- the torch-free runtime and bad inputs --------------------------------------------------------------------

_ISOLATED = TORCH_BLOCKER + """
import numpy as np
from PIL import Image
from hfexport.runtime import load
model = load(sys.argv[1])
image = np.zeros((20, 30, 3), np.uint8) + 90
Image.fromarray(image).save(sys.argv[2])
model(image)  # ONNX Runtime's first int8 call can differ from later ones by ~5e-4
results = [model(image), model(sys.argv[2]), model(Image.fromarray(image)), model([image, sys.argv[2]])]
print(json.dumps({"same": results[0] == results[1] == results[2], "rows": len(results[3]),
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum"))}))
"""


def test_image_runtime_runs_without_torch_or_transformers(vision_bundle, tmp_path):
    bundle = vision_bundle("vit", "image-classification", "cpu")
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(bundle), str(tmp_path / "x.png")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"same": True, "rows": 2, "heavy": []}


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((8, 8), np.uint8), "HxWx3 uint8"),
    (np.zeros((8, 8, 3), np.float32), "HxWx3 uint8"),
    ("/no/such/image.png", "file not found"),
    (42, "pass an image file path"),
    ([], "pass an image file path"),
    (["a text"], "file not found"),
])
def test_image_bad_input_is_one_value_error_line(vision_bundle, bad, message):
    from hfexport.runtime import load

    model = load(vision_bundle("vit", "image-classification", "cpu"))
    with pytest.raises(ValueError, match=message) as info:
        model(bad)
    assert "\n" not in str(info.value)


def test_image_file_pillow_cannot_read_names_the_file(vision_bundle, tmp_path):
    from hfexport.runtime import load

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not an image Pillow can read"):
        load(vision_bundle("vit", "image-classification", "cpu"))(str(broken))


def test_cli_run_prints_labels_for_an_image(vision_bundle, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from hfexport.cli import main

    Image.fromarray(synthetic_image(11)).save(tmp_path / "image.png")
    result = CliRunner().invoke(main, ["run", str(vision_bundle("vit", "image-classification", "cpu")),
                                       str(tmp_path / "image.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "image.png" in result.output and any(f'"label": "{name}"' in result.output for name in LABELS)


# -- task inference and user data -----------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "task"), [("vit", "image-classification"), ("resnet", "image-classification"),
                                              ("vit", "image-feature-extraction"),
                                              ("dinov2", "image-feature-extraction")])
def test_task_inferred_from_the_architecture(vision_model, family, task):
    from hfexport.tasks import infer_task_from_folder

    assert infer_task_from_folder(vision_model(family, task)) == task


def test_vision_base_models_are_transformers_image_models():
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_MAPPING_NAMES

    from hfexport.tasks.image_feature_extraction import VISION_BASE_MODELS

    assert set(VISION_BASE_MODELS) <= set(MODEL_FOR_IMAGE_MAPPING_NAMES.values())


def test_image_folders_calibrate_and_evaluate_with_labels(vision_model, tmp_path):
    """--calibration-data and --eval-data folders of image files; the subfolder names are the labels."""
    from PIL import Image

    from hfexport.api import build
    from hfexport.progress import Progress

    for index in range(12):
        label = LABELS[index % 2]
        (tmp_path / "eval" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_image(500 + index)).save(tmp_path / "eval" / label / f"{index}.png")
        (tmp_path / "calib").mkdir(exist_ok=True)
        Image.fromarray(synthetic_image(700 + index)).save(tmp_path / "calib" / f"{index}.jpg")
    recipe = dict(FAST_RECIPE, passes=[{"type": "export"},
                                       {"type": "quantize", "precision": "int8", "mode": "static"}])
    (tmp_path / "static.yaml").write_text(json.dumps(recipe))
    result = build(str(vision_model("resnet")), target="cpu", recipe=str(tmp_path / "static.yaml"),
                   output=tmp_path / "bundle", calibration_data=str(tmp_path / "calib"),
                   eval_data=str(tmp_path / "eval"), progress=Progress("quiet"), gates=False)
    quantize = next(p for p in result.manifest.passes if p.name == "quantize")
    assert quantize.stats["mode"] == "static" and quantize.stats["calibration_samples"] == 12
    bundle_stage = result.report.stages[-1]
    assert result.report.evaluation.labelled_examples == 12
    assert set(bundle_stage.task_metrics) == {"accuracy", "macro_f1"}


def test_image_data_folder_errors_are_one_line(tmp_path):
    from hfexport.data import read_image_refs
    from hfexport.errors import DataError

    with pytest.raises(DataError, match="should be a folder of image files"):
        read_image_refs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_image_refs(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"no")
    with pytest.raises(DataError, match="x.png is not an image Pillow can read"):
        read_image_refs(tmp_path / "bad")


# -- DeBERTa-v3: a model without token types (type_vocab_size 0) ------------------------------------------------


@pytest.fixture(scope="module")
def deberta_v3(tmp_path_factory):
    import torch
    import transformers

    from tests.conftest import _bert_tokenizer

    folder = tmp_path_factory.mktemp("deberta-v3")
    tokenizer = _bert_tokenizer(folder)
    config = transformers.DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, type_vocab_size=0, relative_attention=True, position_buckets=16,
        pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
        id2label={0: "NO", 1: "YES"}, label2id={"NO": 0, "YES": 1})
    torch.manual_seed(0)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("target", ["cpu", pytest.param("openvino", marks=pytest.mark.slow)])
def test_deberta_v3_without_token_types_exports_and_runs(deberta_v3, tmp_path, target):
    """TorchScript drops token_type_ids, which the model never reads; the export check used to feed it anyway
    ('Invalid input name: token_type_ids'). The graph, the manifest and the runtime's feeds now agree."""
    from hfexport.api import build
    from hfexport.progress import Progress
    from hfexport.runtime import load

    (tmp_path / "r.yaml").write_text(json.dumps(FAST_RECIPE))
    result = build(str(deberta_v3), target=target, recipe=str(tmp_path / "r.yaml"), output=tmp_path / "b",
                   progress=Progress("quiet"))
    inputs = [i.name for i in result.manifest.signature.inputs]
    assert inputs == ["input_ids", "attention_mask"]
    assert result.report.passed
    model = load(tmp_path / "b")
    assert model.backend.input_names == inputs
    assert model(["a first sentence", "and a second"])[0]["label"] in ("NO", "YES")


def test_token_inputs_follow_the_model():
    """type_vocab_size 0 leaves token_type_ids out; a BERT keeps all three."""
    import transformers

    from hfexport.backends._torch_graph import used_token_inputs

    sample = {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0}
    bert = transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=4, intermediate_size=64))
    deberta = transformers.DebertaV2Model(transformers.DebertaV2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, type_vocab_size=0))
    assert used_token_inputs(bert, sample) == ["input_ids", "attention_mask", "token_type_ids"]
    assert used_token_inputs(deberta, sample) == ["input_ids", "attention_mask"]


def test_serve_refuses_an_image_bundle_in_one_line(vision_bundle):
    """hfexport serve has no image route yet: one line naming the task, before any model is loaded."""
    pytest.importorskip("uvicorn")
    bundle = vision_bundle("vit", "image-classification", "cpu")
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "serve", str(bundle), "--port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no route for image-classification bundles" in out.stderr and "hfexport.runtime.load" in out.stderr


def test_tpu_target_refuses_an_image_model_at_plan_time(vision_model, tmp_path):
    out = subprocess.run([sys.executable, "-m", "hfexport.cli", "build", "-m", str(vision_model("vit", "image-classification")),
                          "--target", "tpu", "-o", str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "unexpected" not in out.stderr
    assert "does not export image models yet" in out.stderr and not (tmp_path / "b").exists()
