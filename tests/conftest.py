"""Fixtures: tiny random-init models built from transformers configs, and a fast evaluation recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Prelude for a child process that must run with torch, transformers, optimum and nncf unimportable: any
# import of them anywhere (the runtime included) raises, so a test of the torch-free runtime cannot pass
# by accident. The child also prints which heavy modules ended up in sys.modules.
TORCH_BLOCKER = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers", "optimum", "nncf"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""



def assert_thread_safe(model, count: int = 32, workers: int = 8) -> None:
    """Many threads calling one loaded model at once get exactly what single calls get."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    texts = [f"sentence number {i} " * (1 + i % 7) for i in range(count)]
    expected = [model([t])[0] for t in texts]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        got = list(pool.map(lambda t: model([t])[0], texts * 3))
    for i, vector in enumerate(got):
        np.testing.assert_allclose(vector, expected[i % len(texts)], atol=1e-5)


TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
}
LABELS = {
    "text-classification": ["negative", "positive"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
}


def _bert_tokenizer(folder: Path):
    """The real all-MiniLM-L6-v2 WordPiece tokenizer (shipped by a package), reused by tiny BERT-likes."""
    from transformers import AutoTokenizer

    from hfexport.loading import packaged_default_model

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_default_model()[0]))
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def _roberta_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained in a second on the shipped corpus, as RoBERTa uses."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    from hfexport.data import default_calibration_texts

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(default_calibration_texts(), vocab_size=600,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                     cls_token="<s>", sep_token="</s>", model_max_length=128)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def make_tiny_model(folder: Path, arch: str, task: str, seed: int = 0, init_range: float = 0.02) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _roberta_tokenizer(folder) if arch == "roberta" else _bert_tokenizer(folder)
    labels = LABELS.get(task, ["NO", "YES"])
    common = {"id2label": dict(enumerate(labels)), "label2id": {v: i for i, v in enumerate(labels)}}
    if arch == "bert":
        config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=128, **common)
    elif arch == "roberta":
        config = transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64,
                                            max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                                            bos_token_id=0, eos_token_id=2, type_vocab_size=1, **common)
    elif arch == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4,
                                               hidden_dim=64, max_position_embeddings=128, **common)
    else:
        raise ValueError(arch)
    config.initializer_range = init_range
    torch.manual_seed(seed)
    model = getattr(transformers, TASK_CLASSES[task]).from_config(config)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(arch, task) -> folder of a saved random-init model; built once per session."""
    cache: dict[tuple[str, str], Path] = {}

    def factory(arch: str = "bert", task: str = "feature-extraction") -> Path:
        key = (arch, task)
        if key not in cache:
            cache[key] = make_tiny_model(tmp_path_factory.mktemp(f"{arch}-{task}"), arch, task)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def fast_recipe(tmp_path_factory):
    """fast_recipe(passes=..., gates=...) -> path of a recipe with a short evaluation, for tiny models."""
    folder = tmp_path_factory.mktemp("recipes")
    counter = iter(range(10_000))

    def factory(passes: list[dict] | None = None, gates: dict | None = None, memory: bool = False) -> Path:
        body = {
            "schema_version": 1,
            "passes": passes or [{"type": "export_onnx"}, {"type": "optimize"}],
            "gates": gates or {},
            "evaluation": {"samples": 16, "batch_size": 4, "latency_runs": 5, "sequence_length": 32,
                           "memory": memory},
        }
        path = folder / f"fast-{next(counter)}.yaml"
        path.write_text(json.dumps(body))  # JSON is YAML
        return path

    return factory


@pytest.fixture(scope="session")
def built_bundle(tiny_model, fast_recipe, tmp_path_factory):
    """build(arch, task, passes=None, gates=None) -> bundle folder; one build per distinct request."""
    from hfexport.api import build
    from hfexport.progress import Progress

    cache: dict = {}

    def factory(arch="bert", task="feature-extraction", passes=None, gates=None, memory=False) -> Path:
        key = (arch, task, json.dumps(passes), json.dumps(gates), memory)
        if key not in cache:
            out = tmp_path_factory.mktemp("bundles") / f"{arch}-{task}"
            build(str(tiny_model(arch, task)), task=task, recipe=str(fast_recipe(passes, gates, memory)),
                  output=out, progress=Progress("quiet"))
            cache[key] = out
        return cache[key]

    return factory


INT8_PASSES = [{"type": "export_onnx"}, {"type": "optimize"}, {"type": "quantize", "precision": "int8"}]


# -- decoder LLMs ---------------------------------------------------------------------------------------

LLM_ARCHS = ("llama", "qwen2", "qwen3", "mistral", "phi3", "gpt2")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _llm_tokenizer(folder: Path):
    """A byte-level BPE trained in a second on the shipped corpus; no pad token, like most LLMs."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from hfexport.data import default_calibration_texts

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(default_calibration_texts(), vocab_size=400,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", model_max_length=256)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def make_tiny_llm(folder: Path, arch: str, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _llm_tokenizer(folder)
    eos = tokenizer.eos_token_id
    common = {"vocab_size": len(tokenizer), "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": None}
    sizes = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
    if arch == "gpt2":
        config = transformers.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=256, **common)
    else:
        config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                        "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig,
                        "phi3": transformers.Phi3Config}[arch]
        extra = {"head_dim": hidden // 4} if arch == "qwen3" else {}
        config = config_class(**sizes, **extra, **common)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """tiny_llm(arch) -> folder of a saved random-init decoder LLM (2 layers, hidden 64)."""
    cache: dict[str, Path] = {}

    def factory(arch: str = "llama") -> Path:
        if arch not in cache:
            cache[arch] = make_tiny_llm(tmp_path_factory.mktemp(f"llm-{arch}"), arch)
        return cache[arch]

    return factory


@pytest.fixture(scope="session")
def build_llm(tiny_llm, tmp_path_factory):
    """build_llm(arch, passes, gates=None, target="cpu") -> (bundle folder, BuildResult); one build per request.

    Gates default to greedy parity with PyTorch; a short evaluation keeps tiny builds fast.
    """
    from hfexport.api import build
    from hfexport.progress import Progress

    cache: dict = {}
    folder = tmp_path_factory.mktemp("llm-bundles")

    def factory(arch: str, passes: list[dict], gates: dict | None = None, target: str = "cpu"):
        key = (arch, json.dumps(passes), json.dumps(gates), target)
        if key not in cache:
            recipe = folder / f"recipe-{len(cache)}.yaml"
            recipe.write_text(json.dumps({
                "schema_version": 1, "passes": passes,
                "gates": gates if gates is not None else {"greedy_agreement": 1.0},
                "evaluation": {"samples": 8, "latency_runs": 5, "sequence_length": 8, "generation_tokens": 8}}))
            out = folder / f"{target}-{arch}-{len(cache)}"
            cache[key] = (out, build(str(tiny_llm(arch)), target=target, recipe=str(recipe), output=out,
                                     progress=Progress("quiet")))
        return cache[key]

    return factory


@pytest.fixture(scope="session", autouse=True)
def _stage_cache_outside_home(tmp_path_factory):
    """Builds never touch the user's stage cache (~/.cache/hfexport), module-scoped fixtures' builds included."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HFEXPORT_CACHE_DIR", str(tmp_path_factory.mktemp("hfexport-cache-session")))
        patch.delenv("HFEXPORT_CACHE_SIZE", raising=False)
        yield


@pytest.fixture(autouse=True)
def _stage_cache_per_test(tmp_path_factory, monkeypatch):
    """Each test gets its own empty stage cache, so no test reuses another's stages: one that replaces a
    pass's code at run time (monkeypatch) still runs that pass, and results never depend on test order."""
    monkeypatch.setenv("HFEXPORT_CACHE_DIR", str(tmp_path_factory.mktemp("hfexport-cache")))


# -- the model past 2 GB ----------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Tests marked `big` (a 2.6 GB build, ~37 min on 2 cores) run only when asked for: `-m big`."""
    if "big" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a 2.6 GB model build (~37 min on 2 cores): run with -m big")
    for item in items:
        if "big" in item.keywords:
            item.add_marker(skip)
