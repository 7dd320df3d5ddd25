"""Model coverage (issue 16): tasks inferred from transformers' auto mappings, models loaded by their
`config.architectures` class, one-line refusals for what hfexport does not build yet, and Gemma-style
sliding windows past the window. Every crash case of the issue is a regression test here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hfexport.cli import main
from hfexport.errors import ExportError, ModelLoadError, first_line
from hfexport.tasks import TASKS, infer_task_from_folder, normalize_task
from tests.conftest import _bert_tokenizer, _llm_tokenizer


def _built(task: str) -> bool:
    try:
        normalize_task(task)
    except ModelLoadError:
        return False
    return True


def _config_only(folder: Path, architecture: str | None, model_type: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": model_type, **({"architectures": [architecture]} if architecture else {})}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# -- task inference from the auto mappings ----------------------------------------------------------------

# (architecture, model_type, the task it is, words the refusal names while that task is not built)
CLASSES = [
    ("BertForSequenceClassification", "bert", "text-classification", "text encoder"),
    ("BertForPreTraining", "bert", "fill-mask", "text encoder"),
    ("RobertaForTokenClassification", "roberta", "token-classification", "text encoder"),
    ("GPT2LMHeadModel", "gpt2", "text-generation", "decoder"),
    ("Gemma2ForCausalLM", "gemma2", "text-generation", "decoder"),
    ("T5EncoderModel", "t5", "feature-extraction", "text encoder"),
    ("MarianMTModel", "marian", "text2text-generation", "encoder-decoder"),
    ("T5ForConditionalGeneration", "t5", "text2text-generation", "encoder-decoder"),
    ("ViTForImageClassification", "vit", "image-classification", "vision"),
    ("ConvNextModel", "convnext", "image-feature-extraction", "vision"),
    (None, "vit", "image-feature-extraction", "vision"),  # no architectures: the model_type's base class
    ("Wav2Vec2ForCTC", "wav2vec2", "automatic-speech-recognition", "speech"),
    ("WhisperForConditionalGeneration", "whisper", "speech-seq2seq", "speech"),  # its alias: Whisper's ASR task
    ("CLIPModel", "clip", "zero-shot-image-classification", "dual encoder"),
    ("SiglipModel", "siglip", "zero-shot-image-classification", "dual encoder"),
    ("Gemma3ForConditionalGeneration", "gemma3", "image-text-to-text", "vision-language"),
]


@pytest.mark.parametrize(("architecture", "model_type", "task", "modality"), CLASSES)
def test_infer_task_from_the_auto_mappings_or_one_line_naming_the_modality(tmp_path, architecture, model_type,
                                                                             task, modality):
    folder = _config_only(tmp_path, architecture, model_type)
    if _built(task):
        assert infer_task_from_folder(folder) == normalize_task(task)
        return
    with pytest.raises(ModelLoadError) as caught:
        infer_task_from_folder(folder)
    message = str(caught.value)
    assert "\n" not in message and not message.endswith(":")
    for part in (str(folder), architecture or "", task, modality, "not built yet", *sorted(TASKS)):
        assert part in message


@pytest.mark.parametrize(("architecture", "model_type", "head"), [
    ("T5Model", "t5", "T5ForConditionalGeneration"), ("BartModel", "bart", "BartForConditionalGeneration"),
    (None, "marian", "MarianMTModel"), ("WhisperModel", "whisper", "WhisperForConditionalGeneration")])
def test_an_encoder_decoder_base_model_is_refused_with_its_head_class(tmp_path, architecture, model_type, head):
    """No head for generation, and its hidden state is the decoder's: never guessed as feature extraction."""
    with pytest.raises(ModelLoadError, match=f"encoder-decoder base model with no generation head; save it as {head}"):
        infer_task_from_folder(_config_only(tmp_path, architecture, model_type))


@pytest.mark.parametrize(("architecture", "model_type", "task", "words"), [
    ("Wav2Vec2ForCTC", "wav2vec2", "feature-extraction", "a speech model"),
    ("ViTModel", "vit", "feature-extraction", "a vision model"),
    ("CLIPModel", "clip", "text-classification", "dual encoder")])
def test_an_explicit_text_task_on_a_speech_or_vision_folder_names_the_modality(tmp_path, architecture, model_type,
                                                                             task, words):
    """--task feature-extraction on a wav2vec2 folder used to end in a tokenizer error."""
    from hfexport.loading import resolve_model

    with pytest.raises(ModelLoadError) as caught:
        resolve_model(str(_config_only(tmp_path, architecture, model_type)), task=task)
    message = str(caught.value)
    assert words in message and f"--task {task} reads text" in message and "\n" not in message


def test_sentence_transformers_folder_stays_feature_extraction(tmp_path):
    folder = _config_only(tmp_path, "MPNetForMaskedLM", "mpnet")
    (folder / "modules.json").write_text("[]")
    assert infer_task_from_folder(folder) == "feature-extraction"


def test_first_line_never_ends_at_a_colon():
    assert first_line(ValueError("cannot instantiate the tokenizer from one of:\n(1) a file\n(2) a model")) == (
        "cannot instantiate the tokenizer from one of: (1) a file")
    assert first_line(OSError("Error in execution:\n\n")) == "Error in execution"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert len(first_line(ValueError("x" * 1000))) == 300


# -- loading by the architectures class -------------------------------------------------------------------

def _t5_encoder(folder: Path) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder)
    config = transformers.T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=4, pad_token_id=0, decoder_start_token_id=0)
    torch.manual_seed(0)
    transformers.T5EncoderModel(config).save_pretrained(str(folder))
    return folder


def _bart(folder: Path) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder)
    config = transformers.BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    transformers.BartModel(config).save_pretrained(str(folder))
    return folder


def _mean_pooled(states, mask) -> np.ndarray:
    mask = mask[..., None].astype(np.float32)
    return (states * mask).sum(1) / mask.sum(1)


def _embeddings_match(bundle: Path, module, tokenizer_folder: Path) -> None:
    """The bundle's embeddings equal `module`'s mean-pooled last_hidden_state (cosine >= 0.9999)."""
    import torch
    from transformers import AutoTokenizer

    from hfexport.runtime import load

    texts = ["a first sentence to embed", "and a second, longer one with more words in it"]
    batch = AutoTokenizer.from_pretrained(str(tokenizer_folder))(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    want = _mean_pooled(states.numpy(), batch["attention_mask"].numpy())
    got = np.asarray(load(bundle)(texts))
    cosine = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_t5_encoder_model_loads_as_itself_and_builds_as_feature_extraction(tmp_path, fast_recipe):
    """It used to load as T5Model with a random decoder and crash."""
    import transformers

    from hfexport.api import build
    from hfexport.loading import load_torch_model, resolve_model
    from hfexport.progress import Progress

    folder = _t5_encoder(tmp_path / "t5-encoder")
    source = resolve_model(str(folder))
    assert source.task == "feature-extraction"
    assert type(load_torch_model(source)).__name__ == "T5EncoderModel"
    build(str(folder), recipe=str(fast_recipe([{"type": "export_onnx"}])), output=tmp_path / "bundle",
          progress=Progress("quiet"))
    reference = transformers.T5EncoderModel.from_pretrained(str(folder)).eval()
    _embeddings_match(tmp_path / "bundle", reference, folder)


def test_bart_feature_extraction_exports_the_encoder(tmp_path, fast_recipe):
    """It used to export the decoder's hidden state; without --task the base model is refused."""
    import transformers

    from hfexport.api import build
    from hfexport.loading import load_torch_model, resolve_model
    from hfexport.progress import Progress

    folder = _bart(tmp_path / "bart")
    with pytest.raises(ModelLoadError, match="--task feature-extraction to export its encoder"):
        resolve_model(str(folder))
    assert type(load_torch_model(resolve_model(str(folder), task="feature-extraction"))).__name__ == "BartEncoder"
    build(str(folder), task="feature-extraction", recipe=str(fast_recipe([{"type": "export_onnx"}])),
          output=tmp_path / "bundle", progress=Progress("quiet"))
    _embeddings_match(tmp_path / "bundle", transformers.BartModel.from_pretrained(str(folder)).eval().get_encoder(),
                      folder)


def test_a_head_the_checkpoint_lacks_is_refused_not_exported_random(tmp_path):
    """A base BERT folder asked for text classification would get a random classifier."""
    from hfexport.loading import load_torch_model, resolve_model
    from tests.conftest import make_tiny_model

    folder = make_tiny_model(tmp_path / "bert", "bert", "feature-extraction")
    with pytest.raises(ModelLoadError, match=r"no weights for .*classifier.*head would be random"):
        load_torch_model(resolve_model(str(folder), task="text-classification"))


# -- the CLI: built, or one line naming the modality ------------------------------------------------------

def _vit(folder: Path) -> None:
    import transformers

    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64,
                                    id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    transformers.ViTForImageClassification(config).save_pretrained(str(folder))
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))


def _wav2vec2(folder: Path) -> None:
    import transformers

    config = transformers.Wav2Vec2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2),
                                         conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=2)
    transformers.Wav2Vec2ForCTC(config).save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(str(folder))
    (folder / "vocab.json").write_text(json.dumps({"<pad>": 0, "|": 1, **{c: 2 + i for i, c in enumerate("abc")}}))


def _whisper(folder: Path) -> None:
    import transformers

    vocab = len(_llm_tokenizer(folder))
    config = transformers.WhisperConfig(vocab_size=vocab + 3, d_model=32, encoder_layers=1, decoder_layers=1,
                                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                        decoder_ffn_dim=64, max_target_positions=64, pad_token_id=0,
                                        bos_token_id=vocab, eos_token_id=vocab, decoder_start_token_id=vocab + 1,
                                        begin_suppress_tokens=None, suppress_tokens=None)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(str(folder))
    transformers.WhisperFeatureExtractor().save_pretrained(str(folder))


def _clip(folder: Path) -> None:
    import transformers

    vocab = len(_bert_tokenizer(folder))
    config = transformers.CLIPConfig(
        text_config={"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 64, "max_position_embeddings": 64},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 64}, projection_dim=16)
    transformers.CLIPModel(config).save_pretrained(str(folder))
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(str(folder))


def _marian(folder: Path) -> None:
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    from hfexport.data import default_calibration_texts

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(default_calibration_texts(), vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>",
                                                     eos_token="</s>", unk_token="<unk>", model_max_length=64)
    tokenizer.save_pretrained(str(folder))
    config = transformers.MarianConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                       decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0,
                                       eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1)
    transformers.MarianMTModel(config).save_pretrained(str(folder))


# The export alone, whatever the task, and a short evaluation: the built branch stays a few seconds.
FAST_RECIPE = {"schema_version": 1, "passes": [{"type": "export"}], "gates": {},
               "evaluation": {"samples": 8, "batch_size": 4, "latency_runs": 5, "sequence_length": 8,
                              "generation_tokens": 4}}
FOLDERS = {  # maker, the task, words the refusal names while the task is not built
    "vit-image-classification": (_vit, "image-classification", "vision"),
    "wav2vec2-ctc": (_wav2vec2, "automatic-speech-recognition", "speech"),
    "whisper": (_whisper, "speech-seq2seq", "speech"),
    "clip": (_clip, "zero-shot-image-classification", "dual encoder"),
    "marian-mt": (_marian, "text2text-generation", "encoder-decoder"),
}


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_cli_builds_the_folder_or_refuses_in_one_line_naming_the_modality(tmp_path, name):
    """Vision, audio, dual-encoder and seq2seq folders: a bundle when the task is built, else one `error:` line
    with the modality and the task (never a tokenizer error, an 'unexpected ...', or a traceback)."""
    import torch

    make, task, modality = FOLDERS[name]
    folder = tmp_path / name
    folder.mkdir()
    torch.manual_seed(0)
    make(folder)
    out, recipe = tmp_path / "bundle", tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps(FAST_RECIPE))
    argv = ["build", "--model", str(folder), "--target", "cpu", "--recipe", str(recipe), "--output", str(out),
            "--quiet", "--no-gates", "--validation", "quick"]
    result = CliRunner().invoke(main, argv, catch_exceptions=True)
    output = result.output  # stdout and stderr together
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in output and "unexpected" not in output, output
    if _built(task):
        assert result.exit_code == 0, output
        assert json.loads((out / "manifest.json").read_text())["model"]["task"] == normalize_task(task)
        return
    assert result.exit_code != 0 and not out.exists()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for part in (task, modality, "not built yet"):
        assert part in errors[0], errors[0]


# -- Gemma-style sliding windows --------------------------------------------------------------------------

WINDOW = 8


def _gemma(folder: Path, family: str) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _llm_tokenizer(folder)
    eos = tokenizer.eos_token_id
    common = {"vocab_size": len(tokenizer), "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": None,
              "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128, "sliding_window": WINDOW,
              "layer_types": ["sliding_attention", "full_attention"]}
    torch.manual_seed(0)
    if family == "gemma2":
        model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**common))
    else:
        model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**common))
    model.save_pretrained(str(folder))
    return folder


def _build_gemma(tmp_path: Path, family: str, target: str) -> tuple[Path, Path]:
    from hfexport.api import build
    from hfexport.progress import Progress

    folder = _gemma(tmp_path / "model", family)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps(FAST_RECIPE))
    build(str(folder), target=target, recipe=str(recipe), output=tmp_path / "bundle", progress=Progress("quiet"),
          gates=False, validation="quick")
    return folder, tmp_path / "bundle"


@pytest.mark.parametrize(("family", "target"), [("gemma2", "cpu"), ("gemma2", "openvino"),
                                               pytest.param("gemma3", "cpu", marks=pytest.mark.slow)])
def test_sliding_window_greedy_parity_for_three_windows(tmp_path, family, target):
    """The ONNX bundle failed at the window (`Concat ... Shape mismatch`); prompt past the window, then 3x it."""
    import torch
    from transformers import AutoModelForCausalLM

    from hfexport.runtime import load

    if target == "openvino":
        pytest.importorskip("openvino")
    folder, bundle = _build_gemma(tmp_path, family, target)
    generator = load(bundle)
    prompt = generator.encode("The model reads a long text about many things and then writes more " * 4)
    prompt = prompt[: WINDOW + 3]
    new = 3 * WINDOW
    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    assert generator.generate_ids([prompt], max_new_tokens=new, min_new_tokens=new)[0] == want
    # and a short prompt that crosses the window while decoding
    with torch.inference_mode():
        ids = torch.tensor([prompt[:3]])
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=0)[0, 3:].tolist()
    assert generator.generate_ids([prompt[:3]], max_new_tokens=new, min_new_tokens=new)[0] == want


def test_export_check_catches_a_graph_that_crops_the_sliding_window(tmp_path, monkeypatch):
    """With transformers' cropping sliding-window cache traced in, the export's own check must fail, typed."""
    from hfexport.backends import _generation_graph

    monkeypatch.setattr(_generation_graph, "full_layers", lambda cache: cache)
    with pytest.raises(ExportError, match="exported graph"):
        _build_gemma(tmp_path, "gemma2", "cpu")


def test_check_prompts_cross_the_window(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfexport.backends._generation_graph import check_prompts, sliding_window

    folder = _gemma(tmp_path / "model", "gemma2")
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert sliding_window(model) == WINDOW
    lengths = [len(p) for p in check_prompts(model, AutoTokenizer.from_pretrained(str(folder)), 8)]
    assert lengths[1] < WINDOW < lengths[1] + 8 and lengths[2] > WINDOW
