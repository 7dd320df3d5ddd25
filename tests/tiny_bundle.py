"""A hand-made feature-extraction bundle in milliseconds (no torch): a WordLevel tokenizer, a one-Gather ONNX
graph (token embeddings, optionally as external data) and a format-2 manifest with real checksums.

Used by the signing, path-confinement, fuzz and bad-input tests, which need many bundles fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "the", "a", "cat", "dog"]
HIDDEN = 8


def tokenizer_json() -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return json.loads(tok.to_str())


def write_model(path: Path, external: str | None = None) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((len(WORDS), HIDDEN)).astype(np.float32),
                                    "embeddings")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    types = helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])
    graph = helper.make_graph([helper.make_node("Gather", ["embeddings", "input_ids"], ["last_hidden_state"])],
                              "tiny", [ids, mask, types], [out], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if external is not None:
        onnx.save_model(model, str(path), save_as_external_data=True, location=external, size_threshold=0)
    else:
        onnx.save_model(model, str(path))


def manifest_body(folder: Path) -> dict:
    from hfexport.runtime.manifest import file_table

    return {
        "format_version": 2, "hfexport_version": "0.1.0", "created": "2026-11-30T00:00:00+00:00",
        "model": {"id": "tiny", "revision": None, "task": "feature-extraction", "model_type": "bert",
                  "max_length": 16, "pooling": {"mode": "mean", "normalize": True}},
        "target": {"name": "cpu", "backend": "onnxruntime", "device": "cpu",
                   "execution_providers": ["CPUExecutionProvider"], "isa": "avx2", "precision": "fp32",
                   "session": {"intra_op_threads": 1, "inter_op_threads": 1, "graph_optimization_level": "all",
                               "execution_mode": "sequential"}, "runtime_packages": ["onnxruntime"]},
        "recipe": {"name": "tiny", "gates": {}, "evaluation": {}},
        "passes": [],
        "model_file": "model.onnx", "model_files": ["model.onnx"],
        "tokenizer": {"file": "tokenizer/tokenizer.json", "pad_token": "[PAD]", "pad_token_id": 0,
                      "padding_side": "right"},
        "signature": {"inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]}
                                 for n in ("input_ids", "attention_mask", "token_type_ids")],
                      "outputs": [{"name": "last_hidden_state", "dtype": "float32",
                                   "shape": ["batch", "sequence", HIDDEN]}]},
        "tools": {}, "build_host": {"cpu": "x", "machine": "x86_64", "isas": [], "logical_cpus": 1,
                                    "python": "3", "platform": "linux"},
        "files": file_table(folder),
    }


def write_manifest(folder: Path, body: dict | None = None, rehash: bool = True) -> dict:
    """Write manifest.json; `rehash` recomputes the files table first (what an attacker without the key can do)."""
    from hfexport.runtime.manifest import file_table

    body = body if body is not None else manifest_body(folder)
    if rehash:
        body["files"] = file_table(folder)
    (folder / "manifest.json").write_text(json.dumps(body), encoding="utf-8")
    return body


def make_bundle(folder: Path, external: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "tokenizer.json").write_text(json.dumps(tokenizer_json()), encoding="utf-8")
    write_model(folder / "model.onnx", external)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    write_manifest(folder)
    return folder
