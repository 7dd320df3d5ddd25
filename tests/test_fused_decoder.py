"""The fused decoder graph (GroupQueryAttention, packed projections, an in-place cache buffer): parity with
PyTorch for every architecture it writes, left-padded batches, which models fall back to the trace."""

from __future__ import annotations

import json

import numpy as np
import pytest

PROMPTS = [[5, 17, 42, 99, 7, 8, 3], [11, 12, 13], [40]]


def _model(tiny_llm, arch):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llm(arch))).eval()


def _decoder(model, path):
    from hfexport.backends._generation_graph import cache_layout
    from hfexport.backends._onnx.fused_decoder import write_fused_graph
    from hfexport.runtime.backends.onnxruntime import open_session

    layers, kv_heads, head_dim = cache_layout(model)
    nodes = write_fused_graph(model, path, layers=layers, kv_heads=kv_heads, head_dim=head_dim, positions=256,
                              opset=17)
    return open_session(path, {"execution_providers": ["CPUExecutionProvider"]}).decoder(), nodes


def _left_padded(prompts, extra):
    width = max(map(len, prompts))
    ids = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros((len(prompts), width + extra), np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):width] = 1
    positions = np.where(mask[:, :width] == 1, np.cumsum(mask[:, :width], 1) - 1, 1)
    return ids, mask, positions


def _greedy(decoder, prompts, tokens, capacity=True):
    ids, mask, positions = _left_padded(prompts, tokens)
    width = ids.shape[1]
    cache = decoder.empty_cache(len(prompts), capacity=width + tokens if capacity else None)
    logits, cache = decoder.step(ids, mask[:, :width], positions, cache)
    out = []
    for step in range(tokens):
        chosen = logits.argmax(-1)
        out.append(chosen)
        mask[:, width + step] = 1
        logits, cache = decoder.step(chosen[:, None], mask[:, :width + step + 1], None, cache)
    return np.stack(out, 1).tolist()


def _torch_greedy(model, prompt, tokens):
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_fused_graph_batched_left_padded_greedy_equals_pytorch(tiny_llm, tmp_path, arch):
    model = _model(tiny_llm, arch)
    decoder, nodes = _decoder(model, tmp_path / "model.onnx")
    assert decoder.fused and nodes < 40 * 2  # 2 layers: a few operators each, not a trace's hundreds
    got = _greedy(decoder, PROMPTS, 6)
    assert got == [_torch_greedy(model, prompt, 6) for prompt in PROMPTS]
    assert _greedy(decoder, PROMPTS[:1], 6, capacity=False) == got[:1]  # the growing cache (no capacity) agrees


def test_fused_graph_every_position_logits_match_pytorch_per_row(tiny_llm, tmp_path):
    import torch

    model = _model(tiny_llm, "llama")
    decoder, _ = _decoder(model, tmp_path / "model.onnx")
    ids, mask, positions = _left_padded(PROMPTS, 0)
    logits, _ = decoder.step(ids, mask, positions, decoder.empty_cache(len(PROMPTS)), all_logits=True)
    for row, prompt in enumerate(PROMPTS):  # returned at the caller's left-padded positions
        with torch.inference_mode():
            want = model(torch.tensor([prompt])).logits[0].numpy()
        np.testing.assert_allclose(logits[row, ids.shape[1] - len(prompt):], want, atol=1e-4)


def test_in_place_decode_steps_give_each_rows_logits_alone_on_a_growing_cache(tiny_llm, tmp_path):
    """Decode steps on a preallocated cache bind the ids and each row's length once and fill them in place;
    each step's logits equal those of the row alone on a growing cache (fed the same tokens), and are a view
    of the cache's logits buffer."""
    decoder, _ = _decoder(_model(tiny_llm, "llama"), tmp_path / "model.onnx")
    forced = [[3, 9, 27, 81], [50, 2, 60, 4], [7, 7, 7, 7]]  # teacher-forced tokens per row
    ids, mask, positions = _left_padded(PROMPTS, 4)
    width = ids.shape[1]
    cache = decoder.empty_cache(len(PROMPTS), capacity=width + 4)
    logits, cache = decoder.step(ids, mask[:, :width], positions, cache)
    batched = [logits.copy()]
    for step in range(4):
        mask[:, width + step] = 1
        logits, cache = decoder.step(np.array(forced)[:, step:step + 1], mask[:, :width + step + 1], None, cache)
        batched.append(logits.copy())
    assert np.shares_memory(logits, cache.logits) and cache.lengths.tolist() == (mask.sum(1) - 1).tolist()
    for row, prompt in enumerate(PROMPTS):
        alone = decoder.empty_cache(1)
        logits, alone = decoder.step(np.array([prompt]), np.ones((1, len(prompt)), np.int64), None, alone)
        got = [logits]
        for step, token in enumerate(forced[row]):
            logits, alone = decoder.step(np.array([[token]]), np.ones((1, len(prompt) + step + 1), np.int64), None,
                                         alone)
            got.append(logits)
        for step, expected in enumerate(got):
            np.testing.assert_allclose(batched[step][row], expected[0], rtol=1e-4, atol=1e-4)


def test_step_token_gives_steps_logits_on_buffers_and_on_a_growing_cache(tiny_llm, tmp_path):
    """`step_token` (the greedy one-row loop's step, decision 0198): on preallocated buffers it writes the token and
    the row's length and runs; on a growing cache it is `step`. Either way the logits are `step`'s."""
    decoder, _ = _decoder(_model(tiny_llm, "llama"), tmp_path / "model.onnx")
    prompt, forced = PROMPTS[0], [3, 9, 27, 81, 2]
    total = len(prompt) + len(forced)

    def run(capacity, by_token):
        cache = decoder.empty_cache(1, capacity=capacity)
        logits, cache = decoder.step(np.array([prompt]), np.ones((1, len(prompt)), np.int64), None, cache)
        got = [logits.copy()]
        for step, token in enumerate(forced):
            width = len(prompt) + step + 1
            if by_token:
                logits, cache = decoder.step_token(token, width, cache)
            else:
                logits, cache = decoder.step(np.array([[token]]), np.ones((1, width), np.int64), None, cache)
            got.append(logits.copy())
        return np.concatenate(got), cache

    reference, _ = run(None, False)
    for capacity in (None, total):  # a growing cache, then buffers
        got, cache = run(capacity, True)
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
    assert cache.width == total and cache.lengths.tolist() == [total - 1]  # the buffers' fast case ran


def test_fused_cache_buffer_refuses_a_step_past_its_capacity_and_ragged_rows_without_one(tiny_llm, tmp_path):
    decoder, _ = _decoder(_model(tiny_llm, "llama"), tmp_path / "model.onnx")
    ids, mask, positions = _left_padded(PROMPTS[:2], 2)
    width = ids.shape[1]
    _, cache = decoder.step(ids, mask[:, :width], positions, decoder.empty_cache(2, capacity=width))
    mask[:, width] = 1
    with pytest.raises(ValueError, match=f"cache holds {width} positions"):
        decoder.step(np.zeros((2, 1), np.int64), mask[:, :width + 1], None, cache)
    _, grown = decoder.step(ids, mask[:, :width], positions, decoder.empty_cache(2))
    with pytest.raises(ValueError, match="need empty_cache"):
        decoder.step(np.zeros((2, 1), np.int64), mask[:, :width + 1], None, grown)


def test_fused_graph_weights_in_one_sidecar_give_the_same_logits(tiny_llm, tmp_path, monkeypatch):
    import hfexport.backends._onnx.fused_decoder as fused

    model = _model(tiny_llm, "llama")
    inline, _ = _decoder(model, tmp_path / "inline.onnx")
    monkeypatch.setattr(fused, "_EXTERNAL_FROM", 0)
    (tmp_path / "side").mkdir()
    external, _ = _decoder(model, tmp_path / "side" / "model.onnx")
    assert sorted(p.name for p in (tmp_path / "side").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "side" / "model.onnx").stat().st_size < 64 * 1024  # weights are in the sidecar
    ids, mask, positions = _left_padded(PROMPTS[:1], 0)
    a, _ = inline.step(ids, mask, positions, inline.empty_cache(1), all_logits=True)
    b, _ = external.step(ids, mask, positions, external.empty_cache(1), all_logits=True)
    np.testing.assert_array_equal(a, b)


def test_fused_refusal_names_what_the_graph_cannot_express(tiny_llm):
    import transformers

    from hfexport.backends._onnx.fused_decoder import fused_refusal

    assert fused_refusal(_model(tiny_llm, "llama")) is None
    assert "model type 'gpt2'" in fused_refusal(_model(tiny_llm, "gpt2"))
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=128)
    windowed = transformers.AutoModelForCausalLM.from_config(transformers.MistralConfig(**small, sliding_window=16))
    assert "sliding-window attention (window 16)" in fused_refusal(windowed)
    never_reached = transformers.AutoModelForCausalLM.from_config(transformers.MistralConfig(**small,
                                                                                             sliding_window=4096))
    assert fused_refusal(never_reached) is None
    dynamic = transformers.LlamaConfig(**small, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                 "rope_theta": 10000.0})
    assert "rope type 'dynamic'" in fused_refusal(transformers.AutoModelForCausalLM.from_config(dynamic))


def _exporter(result_folder) -> str:
    manifest = json.loads((result_folder / "manifest.json").read_text())
    return manifest["passes"][0]["stats"]["exporter"]


def test_build_uses_the_fused_graph_where_it_applies_and_the_trace_elsewhere(build_llm):
    fused, _ = build_llm("llama", [{"type": "export_onnx_generation"}])
    traced, _ = build_llm("llama", [{"type": "export_onnx_generation", "graph": "traced"}])
    gpt2, _ = build_llm("gpt2", [{"type": "export_onnx_generation"}])
    assert (_exporter(fused), _exporter(traced), _exporter(gpt2)) == ("fused", "torchscript", "torchscript")

    from hfexport.runtime import load

    prompts = ["The model reads", "A much longer prompt that needs left padding when it is batched"]
    texts = [load(str(b)).generate(prompts, max_new_tokens=6, do_sample=False) for b in (fused, traced)]
    assert texts[0] == texts[1]


def test_graph_fused_on_a_model_it_cannot_write_fails_naming_the_option(build_llm):
    from hfexport.errors import HfExportError

    with pytest.raises(HfExportError, match="graph: fused cannot write this model .*model type 'gpt2'.*graph: traced"):
        build_llm("gpt2", [{"type": "export_onnx_generation", "graph": "fused"}])


def _as_before_0199(path, out) -> None:
    """The fused graph as bundles before decision 0199 hold it: an attention mask and `logits_to_keep` in, the
    lengths and the kept position computed inside (0: every position; else each row's last real one)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {"c_axis1": [1], "c_one": [1], "c_zero": [0], "c_axis2": [2], "c_scalar": np.zeros(0, np.int64),
              "c_zero_scalar": 0, "c_one_scalar": 1}
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in consts.items())

    def node(kind, inputs, output, **attrs):
        return helper.make_node(kind, inputs, [output], **attrs)

    computed = [
        node("ReduceSum", ["attention_mask", "c_axis1"], "counts", keepdims=0), node("Sub", ["counts", "c_one"], "last"),
        node("Cast", ["last"], "seqlens_k", to=TensorProto.INT32),
        node("Shape", ["attention_mask"], "width", start=1, end=2), node("Reshape", ["width", "c_scalar"], "width0"),
        node("Cast", ["width0"], "total_sequence_length", to=TensorProto.INT32),
        node("Shape", ["input_ids"], "length", start=1, end=2), node("Reshape", ["logits_to_keep", "c_one"], "keep"),
        node("Equal", ["keep", "c_zero"], "every"), node("Where", ["every", "length", "c_one"], "kept"),
        node("Reshape", ["kept", "c_scalar"], "kept0"), node("Range", ["c_zero_scalar", "kept0", "c_one_scalar"], "base"),
        node("Sub", ["length", "c_one"], "end"), node("Min", ["end", "last"], "least"),
        node("Where", ["every", "c_zero", "least"], "offset"), node("Unsqueeze", ["base", "c_zero"], "base2"),
        node("Unsqueeze", ["offset", "c_one"], "offset2"), node("Add", ["base2", "offset2"], "index"),
        node("Unsqueeze", ["index", "c_axis2"], "logits_index")]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(computed + rest)
    kept = [i for i in graph.input if i.name not in ("seqlens_k", "total_sequence_length", "logits_index")]
    del graph.input[:]
    graph.input.extend([kept[0], helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
                        helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, []), *kept[1:]])
    onnx.save(model, str(out))


def test_fused_graph_from_before_0199_decodes_as_todays(tiny_llm, tmp_path):
    """A bundle built before decision 0199 (mask-fed fused graph) goes on decoding through the same runtime paths
    (a growing cache, buffers, step_token) with the same tokens and logits as today's graph."""
    from hfexport.runtime.backends.onnxruntime import open_session

    model = _model(tiny_llm, "llama")
    today, _ = _decoder(model, tmp_path / "model.onnx")
    _as_before_0199(tmp_path / "model.onnx", tmp_path / "old.onnx")
    old = open_session(tmp_path / "old.onnx", {"execution_providers": ["CPUExecutionProvider"]}).decoder()
    assert today.fed and not old.fed and old.fused and old.keeps_logits
    assert _greedy(old, PROMPTS, 6) == _greedy(today, PROMPTS, 6)
    assert _greedy(old, PROMPTS[:1], 6, capacity=False) == _greedy(today, PROMPTS[:1], 6)
    ids, mask, positions = _left_padded(PROMPTS, 0)
    every = [d.step(ids, mask, positions, d.empty_cache(3), all_logits=True)[0] for d in (old, today)]
    np.testing.assert_allclose(every[0], every[1], atol=1e-6)
    prompt = PROMPTS[0]
    for decoder in (old, today):
        cache = decoder.empty_cache(1, capacity=len(prompt) + 3)
        logits, cache = decoder.step(np.array([prompt]), np.ones((1, len(prompt)), np.int64), None, cache)
        for step, token in enumerate([3, 9, 27]):
            logits, cache = decoder.step_token(token, len(prompt) + step + 1, cache)
        assert cache.width == len(prompt) + 3
        if decoder is old:
            first = logits.copy()
    np.testing.assert_allclose(first, logits, atol=1e-6)
