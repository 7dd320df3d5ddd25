"""Whisper speech recognition (automatic-speech-recognition on a WhisperForConditionalGeneration folder): the
numpy log-mel features against transformers, the two-graph export's greedy parity with PyTorch `generate`, built
bundles on cpu and openvino, the torch-free runtime, task resolution and bad input.

A tiny random-init Whisper (tests/whisper_models.py: d_model 64, 2 + 2 layers, a 400-token BPE vocabulary) with
the generation config a hub checkpoint has (language detection, forced task token, suppress_tokens).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hfexport.data import synthetic_audio
from tests.conftest import TORCH_BLOCKER
from tests.whisper_models import make_whisper_model

# export only: the bundle's greedy tokens must be PyTorch generate's on every held-out clip
FP32 = {"schema_version": 1, "passes": [{"type": "export"}], "gates": {"token_agreement": 1.0},
        "evaluation": {"samples": 8, "batch_size": 4, "latency_runs": 5, "memory": False}}


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory):
    cache: dict = {}

    def factory(multilingual: bool = True, mel_bins: int = 80) -> Path:
        key = (multilingual, mel_bins)
        if key not in cache:
            cache[key] = make_whisper_model(tmp_path_factory.mktemp(f"whisper-{multilingual}-{mel_bins}"),
                                            multilingual=multilingual, mel_bins=mel_bins)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def whisper_bundle(whisper_model, tmp_path_factory):
    from hfexport.api import build
    from hfexport.progress import Progress

    recipe = tmp_path_factory.mktemp("whisper-recipe") / "fp32.yaml"
    recipe.write_text(json.dumps(FP32))
    cache: dict = {}

    def factory(target: str = "cpu") -> Path:
        if target not in cache:
            out = tmp_path_factory.mktemp("whisper-bundles") / target
            build(str(whisper_model()), target=target, recipe=str(recipe), output=out, progress=Progress("quiet"),
                  gates=True)
            cache[target] = out
        return cache[target]

    return factory


def _torch_model(folder: Path):
    import transformers

    from hfexport.backends._whisper import restore_generation_config

    model = transformers.WhisperForConditionalGeneration.from_pretrained(str(folder), attn_implementation="eager")
    restore_generation_config(model, folder / "generation_config.json")  # what transformers 5.x drops on load
    return model.eval()


# -- log-mel features ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mel_bins", [80, 128])
def test_log_mel_features_equal_the_feature_extractor(tmp_path, mel_bins):
    import transformers

    from hfexport.runtime.whisper import LogMelFeatures, mel_filter_bank

    extractor = transformers.WhisperFeatureExtractor(feature_size=mel_bins)
    extractor.save_pretrained(str(tmp_path))
    assert np.abs(mel_filter_bank(201, mel_bins, 16000) - extractor.mel_filters).max() < 1e-12
    features = LogMelFeatures(tmp_path / "preprocessor_config.json")
    rng = np.random.default_rng(0)
    clips = [synthetic_audio(i) for i in range(4)] + [np.zeros(8000, np.float32),
                                                       (0.1 * rng.standard_normal(30 * 16000)).astype(np.float32)]
    got = features.encode(clips)
    assert got.shape == (6, mel_bins, 3000) and got.dtype == np.float32
    # transformers' numpy path: the same arithmetic (float64 STFT)
    numpy_path = np.stack([extractor._np_extract_fbank_features(
        np.pad(c, (0, extractor.n_samples - len(c)))[None].astype(np.float64), "cpu")[0] for c in clips[:2]])
    assert np.abs(numpy_path - got[:2]).max() < 1e-5
    # what users get from transformers with torch installed (its float32 torch STFT): the build's tolerance
    want = extractor(clips, sampling_rate=16000, return_tensors="np")["input_features"]
    assert np.abs(want - got).max() < 2e-4


def test_a_clip_over_30_seconds_is_one_value_error_line(tmp_path):
    import transformers

    from hfexport.runtime.whisper import LogMelFeatures

    transformers.WhisperFeatureExtractor().save_pretrained(str(tmp_path))
    features = LogMelFeatures(tmp_path / "preprocessor_config.json")
    with pytest.raises(ValueError, match="31.0 s is longer than the 30 s") as info:
        features.encode(np.zeros(31 * 16000, np.float32))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="1-D float"):
        features.encode(np.zeros(100, np.int16))


# -- the two graphs against PyTorch generate ------------------------------------------------------------------


@pytest.mark.parametrize("multilingual", [True, False])
def test_exported_pair_decodes_pytorch_generates_tokens(whisper_model, tmp_path, multilingual):
    """The export's own check (backends/_whisper.greedy_check): the runtime loop over the ONNX pair, with the
    detected language (multilingual) or the forced English prefix, equals generate over 16 tokens."""
    from hfexport.backends._onnx.seq2seq import export_onnx_pair
    from hfexport.backends._whisper import greedy_check
    from hfexport.runtime.backends import open_backend
    from hfexport.runtime.seq2seq import Seq2SeqGraphs
    from hfexport.runtime.whisper import WhisperLoop, WhisperPrompt

    folder = whisper_model(multilingual)
    model = _torch_model(folder)
    encoder_path, decoder_path, layers = export_onnx_pair(model, tmp_path, 17)
    encoder = open_backend("onnxruntime", encoder_path, {"execution_providers": ["CPUExecutionProvider"]})
    graphs = Seq2SeqGraphs(encoder, encoder.open_sibling(decoder_path))
    assert encoder.input_names == ["input_features"] and "encoder_attention_mask" not in graphs.decoder.input_names
    want, got, diff = greedy_check(model, folder, folder, graphs, 16)
    assert len(want) == 16 and got == want
    prefix = WhisperLoop(graphs, WhisperPrompt(model.generation_config.to_dict(), model.config.to_dict())).prefixes(
        1, graphs.encode_features(np.zeros((1, 80, 3000), np.float32)))[0]
    generation = model.generation_config  # <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>
    assert prefix[0] == generation.decoder_start_token_id and prefix[-1] == generation.no_timestamps_token_id
    assert len(prefix) == 4 and prefix[2] == generation.task_to_id["transcribe"] if multilingual else len(prefix) == 4
    assert diff < 1e-3


def test_prompt_follows_generate_for_a_language_and_a_task(whisper_model, tmp_path):
    """language= and task= build the prompt as generate(language=, task=) does (checked through the tokens)."""
    import torch
    import transformers

    from hfexport.backends._onnx.seq2seq import export_onnx_pair
    from hfexport.runtime.backends import open_backend
    from hfexport.runtime.seq2seq import Seq2SeqGraphs
    from hfexport.runtime.whisper import WhisperLoop, WhisperPrompt

    folder = whisper_model()
    model = _torch_model(folder)
    encoder_path, decoder_path, _ = export_onnx_pair(model, tmp_path, 17)
    encoder = open_backend("onnxruntime", encoder_path, {"execution_providers": ["CPUExecutionProvider"]})
    loop = WhisperLoop(Seq2SeqGraphs(encoder, encoder.open_sibling(decoder_path)),
                       WhisperPrompt(model.generation_config.to_dict(), model.config.to_dict()))
    extractor = transformers.AutoFeatureExtractor.from_pretrained(str(folder))
    features = extractor([synthetic_audio(3), synthetic_audio(4)], sampling_rate=16000,
                         return_tensors="pt")["input_features"]
    for language, task in (("de", None), ("fr", "translate"), (None, "translate")):
        with torch.inference_mode():
            want = model.generate(features, max_new_tokens=8, min_new_tokens=8, language=language, task=task)
        got = loop.generate_ids(features.numpy(), max_new_tokens=8, min_new_tokens=8, language=language, task=task)
        assert got == want.tolist(), (language, task)
    with pytest.raises(ValueError, match="language 'xx' is not one of this model's"):
        loop.generate_ids(features.numpy(), max_new_tokens=2, language="xx")


# -- built bundles ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cpu", "openvino"])
def test_fp32_bundle_matches_pytorch_on_every_clip(whisper_bundle, target):
    """An export-only build on each target passes token_agreement 1.0 on the held-out clips (the gate) with
    exact_match 1.0, records the log-mel difference, and transcribes clips."""
    from hfexport.runtime import load

    bundle = whisper_bundle(target)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["task"] == "automatic-speech-recognition-seq2seq"
    assert manifest["processor"]["input_name"] == "input_features"
    assert manifest["validation"]["passed"]
    fidelity = json.loads((bundle / "report" / "report.json").read_text())["stages"][-1]["fidelity"]
    assert fidelity == {"token_agreement": 1.0, "exact_match": 1.0}
    stats = manifest["passes"][0]["stats"]
    assert stats["log_mel_max_abs_diff_vs_transformers"] < 2e-4
    assert stats["max_abs_logit_diff_vs_torch"] < 1e-3
    generation = json.loads((bundle / "generation_config.json").read_text())
    assert generation["lang_to_id"] and generation["no_timestamps_token_id"]  # kept beside GenerationConfig's keys
    model = load(bundle)
    results = model([synthetic_audio(1), synthetic_audio(2)], max_new_tokens=6)
    assert len(results) == 2 and all(isinstance(r["text"], str) and r["text"] for r in results)


_ISOLATED = TORCH_BLOCKER + """
import json
import numpy as np
from hfexport.runtime import load
from hfexport.runtime.audio import write_wav
model = load(sys.argv[1])
clip = (np.sin(np.arange(8000) / 7.0) * 0.3).astype(np.float32)
write_wav(sys.argv[2], clip, 16000)
results = [model(clip, max_new_tokens=4), model(sys.argv[2], max_new_tokens=4), model([clip, sys.argv[2]],
           max_new_tokens=4)]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"rows": len(results[2]), "same": results[0] == results[1], "heavy": heavy}))
"""


@pytest.mark.slow
def test_whisper_runtime_runs_without_torch_or_transformers(whisper_bundle, tmp_path):
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(whisper_bundle()), str(tmp_path / "x.wav")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rows": 2, "same": True, "heavy": []}


# -- task resolution -------------------------------------------------------------------------------------


def test_whisper_builds_as_speech_recognition_by_architecture(whisper_model):
    """No --task, --task automatic-speech-recognition (or asr) on a Whisper folder: the Whisper task; the CTC
    task stays the CTC models'."""
    from hfexport.loading import resolve_model
    from hfexport.tasks import infer_task_from_folder

    folder = whisper_model()
    assert infer_task_from_folder(folder) == "automatic-speech-recognition-seq2seq"
    for task in (None, "automatic-speech-recognition", "asr"):
        assert resolve_model(str(folder), task=task).task == "automatic-speech-recognition-seq2seq"


def test_other_speech_encoder_decoders_are_refused_in_one_line(tmp_path):
    from hfexport.errors import ModelLoadError
    from hfexport.tasks import get_task

    with pytest.raises(ModelLoadError, match="speech_to_text is not a Whisper model") as info:
        get_task("automatic-speech-recognition-seq2seq").check_model({"model_type": "speech_to_text"})
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_wav_folder_with_transcripts_gives_wer_for_pytorch_and_the_bundle(whisper_model, whisper_bundle, tmp_path):
    """--eval-data: .wav files with a .txt transcript beside each. The transcripts are the fp32 bundle's own
    texts (PyTorch's, by its gate), so WER is 0.0 for PyTorch and for the new bundle: both decode alike."""
    from hfexport.api import build
    from hfexport.progress import Progress
    from hfexport.runtime import load
    from hfexport.runtime.audio import write_wav

    reference = load(whisper_bundle())
    (tmp_path / "eval").mkdir()
    for index in range(8):
        wav = tmp_path / "eval" / f"clip{index}.wav"
        write_wav(wav, synthetic_audio(700 + index), 16000)
        text = reference(str(wav), max_new_tokens=32)[0]["text"]
        assert text.split()  # words to score, not an empty transcript
        (tmp_path / "eval" / f"clip{index}.txt").write_text(" ".join(text.split()) + "\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text(json.dumps(FP32))
    build(str(whisper_model()), target="cpu", recipe=str(tmp_path / "r.yaml"), output=tmp_path / "b",
          eval_data=tmp_path / "eval", progress=Progress("quiet"))
    stages = json.loads((tmp_path / "b" / "report" / "report.json").read_text())["stages"]
    wer = {stage["name"]: stage["task_metrics"]["wer"] for stage in stages if stage.get("task_metrics")}
    assert wer == {"pytorch": 0.0, "bundle": 0.0}
