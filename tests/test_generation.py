"""Text generation: task inference, KV-cache export, the torch-free generation loop, int4 weights."""

from __future__ import annotations

import json

import pytest

from hfexport.tasks import infer_task_from_folder, normalize_task


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                          "MistralForCausalLM", "Phi3ForCausalLM", "GPT2LMHeadModel"])
def test_tasks_infer_text_generation_for_causal_lm(tmp_path, architecture):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    assert infer_task_from_folder(tmp_path) == "text-generation"
    assert normalize_task("causal-lm") == "text-generation"
