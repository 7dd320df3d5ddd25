"""Text generation on the openvino target: stateful KV-cache IR, NNCF weight compression, the OpenVINO
decoder behind the same torch-free TextGenerator, validation, and the planner's rejections."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hfexport.runtime import load
from hfexport.runtime.manifest import read_manifest
from tests.conftest import TORCH_BLOCKER
from tests.test_generation import PROMPTS, _torch_greedy

pytest.importorskip("openvino")

FP32 = [{"type": "export_openvino_generation"}]
EXPLICIT = [{"type": "export_openvino_generation", "stateful": False}]
INT8 = [*FP32, {"type": "quantize", "precision": "int8", "weights_only": True}]
# The tiny models are 64 wide: groups of 32.
INT4_MIXED = [*FP32, {"type": "quantize", "precision": "int4", "weights_only": True, "group_size": 32,
                      "lm_head_precision": "int8", "embedding_precision": "int4", "int4_top1_target": None}]


@pytest.fixture(scope="session")
def ov_llm_bundle(build_llm):
    """ov_llm_bundle(arch, passes=FP32, gates=None) -> (bundle folder, BuildResult) on the openvino target."""
    return lambda arch="llama", passes=None, gates=None: build_llm(arch, passes or FP32, gates, "openvino")


# -- export and greedy parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_openvino_generation_greedy_tokens_equal_pytorch_generate(ov_llm_bundle, tiny_llm, arch):
    bundle, result = ov_llm_bundle(arch)
    generator = load(bundle)
    assert generator.backend.backend == "openvino"
    for prompt in PROMPTS:
        assert generator.generate_ids([generator.encode(prompt)], max_new_tokens=12)[0] == \
            _torch_greedy(tiny_llm(arch), prompt, 12)
    report = result.report
    assert report.passed and report.summary["greedy_agreement"] == 1.0 and report.summary["top1_agreement"] == 1.0
    assert report.stage("bundle").generation["decode_tokens_per_s"] > 0
    assert report.target.runtime["inference_precision"] == "f32"
    stats = result.manifest.passes[0].stats
    assert stats["stateful"] and stats["max_abs_logit_diff_vs_torch"] < 1e-4
    # The cache lives in the request: no past/present ports, only the beam order the CPU plugin's fused
    # attention needs, and the positions whose logits the LM head computes.
    signature = result.manifest.signature
    assert [i.name for i in signature.inputs] == ["input_ids", "attention_mask", "position_ids", "logits_to_keep",
                                                  "beam_idx"]
    assert [o.name for o in signature.outputs] == ["logits"]
    assert result.manifest.model_files == ["model.xml", "model.bin"]


def test_openvino_generation_explicit_kv_equals_pytorch(ov_llm_bundle, tiny_llm):
    bundle, result = ov_llm_bundle("llama", EXPLICIT)
    generator = load(bundle)
    assert type(generator.decoder).__name__ == "OpenVINODecoder"
    assert "past_key_values.0.key" in generator.backend.input_names
    for prompt in PROMPTS:
        assert generator.generate_ids([generator.encode(prompt)], max_new_tokens=12)[0] == \
            _torch_greedy(tiny_llm("llama"), prompt, 12)
    assert generator.generate(PROMPTS, max_new_tokens=8) == [generator.generate(p, max_new_tokens=8) for p in PROMPTS]


# -- the stateful decoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_openvino_generation_batch_with_left_padding_equals_each_prompt_alone(ov_llm_bundle, arch):
    generator = load(ov_llm_bundle(arch)[0])
    batched = generator.generate(PROMPTS, max_new_tokens=10)
    assert batched == [generator.generate(p, max_new_tokens=10) for p in PROMPTS]
    assert generator.generate(PROMPTS, max_new_tokens=10, do_sample=True, top_k=1) == batched


def test_openvino_generation_state_resets_between_calls(ov_llm_bundle):
    generator = load(ov_llm_bundle("llama")[0])
    decoder = generator.decoder
    ids = np.asarray([generator.encode("The model reads")], np.int64)
    length = ids.shape[1]

    def prefill(cache):
        return decoder.step(ids, np.ones_like(ids), np.arange(length)[None], cache, all_logits=True)[0]

    cache = decoder.empty_cache(1)
    first = prefill(cache)
    decoder.step(np.array([[7]]), np.ones((1, length + 1), np.int64), np.array([[length]]), cache)
    # A fresh cache starts empty whatever another request holds ...
    np.testing.assert_array_equal(prefill(decoder.empty_cache(1)), first)
    # ... and a used request, reset, is a fresh sequence again.
    cache.request.reset_state()
    np.testing.assert_array_equal(prefill(cache), first)
    # Whole calls: nothing carries over from one generate call to the next.
    text = generator.generate("Again and again", max_new_tokens=12)
    assert [generator.generate("Again and again", max_new_tokens=12) for _ in range(2)] == [text, text]


def test_openvino_step_token_gives_steps_logits(ov_llm_bundle):
    """The stateful decoder's one-row step (decision 0198) fills arrays it made once; its logits equal `step`'s, and
    past the capacity it was made for it still runs."""
    decoder = load(ov_llm_bundle("llama")[0]).decoder
    ids = np.asarray([[5, 17, 42, 99]], np.int64)
    forced = [3, 9, 27, 81, 2]

    def run(by_token):
        cache = decoder.empty_cache(1, capacity=len(ids[0]) + 2)  # a capacity shorter than the run
        logits, cache = decoder.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], cache)
        got = [logits.copy()]
        for step, token in enumerate(forced):
            total = ids.shape[1] + step + 1
            logits, cache = (decoder.step_token(token, total, cache) if by_token else decoder.step(
                np.array([[token]]), np.ones((1, total), np.int64), np.array([[total - 1]]), cache))
            got.append(logits.copy())
        return np.concatenate(got)

    np.testing.assert_array_equal(run(True), run(False))


def test_openvino_generation_concurrent_calls_get_their_own_state(ov_llm_bundle):
    from concurrent.futures import ThreadPoolExecutor

    generator = load(ov_llm_bundle("llama")[0])
    prompts = [f"prompt number {i} " * (1 + i % 3) for i in range(8)]
    expected = [generator.generate(p, max_new_tokens=8) for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda p: generator.generate(p, max_new_tokens=8), prompts * 2))
    assert got == expected * 2


def test_openvino_decoder_refuses_a_model_without_kv_cache(tmp_path):
    import openvino as ov
    from openvino import opset13 as ops

    from hfexport.errors import HfExportError
    from hfexport.runtime.backends.openvino import open_session

    ids = ops.parameter([1, 4], ov.Type.f32, name="input_ids")
    ov.save_model(ov.Model([ops.relu(ids)], [ids]), str(tmp_path / "model.xml"))
    with pytest.raises(HfExportError, match="no KV cache"):
        open_session(tmp_path / "model.xml", {}).decoder()


# -- weight compression -------------------------------------------------------------------------------------


def _constant_types(xml) -> set[str]:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return {op.get_element_type().get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"}


def test_openvino_generation_int8_weights_build_and_generate(ov_llm_bundle):
    fp32, _ = ov_llm_bundle("llama")
    # NOTE: random weights give flat logits, so compression flips some argmaxes: this checks the
    # arithmetic, not quality (the recipes' default gate is 0.9).
    bundle, result = ov_llm_bundle("llama", INT8, gates={"top1_agreement": 0.7})
    assert (bundle / "model.bin").stat().st_size < 0.5 * (fp32 / "model.bin").stat().st_size
    stats = result.manifest.passes[-1].stats
    assert stats["algorithm"] == "nncf.compress_weights" and stats["weights"] == "int8_asym per channel"
    assert result.manifest.target.precision == "int8"
    assert "u8" in _constant_types(bundle / "model.xml")
    assert result.report.summary["top1_agreement"] >= 0.7
    generator = load(bundle)
    assert generator.generate(PROMPTS, max_new_tokens=6) == [generator.generate(p, max_new_tokens=6) for p in PROMPTS]


def test_openvino_generation_int4_keeps_lm_head_and_embedding_at_their_precision(ov_llm_bundle):
    bundle, result = ov_llm_bundle("llama", INT4_MIXED, gates={"top1_agreement": 0.6})
    stats = result.manifest.passes[-1].stats
    assert stats["weights"] == "int4_sym" and stats["group_size"] == 32
    assert stats["lm_head"].startswith("__module.model.lm_head") and stats["lm_head_precision"] == "int8"
    assert stats["embedding_precision"] == "int4" and not stats["tied_embeddings"]
    assert {"i4", "u8"} <= _constant_types(bundle / "model.xml")
    assert result.report.summary["top1_agreement"] >= 0.6


@pytest.mark.parametrize("wanted, kept", [(0.05, "int4"), (1.0, "int8")])
def test_openvino_int4_lm_head_is_kept_only_while_top1_agreement_holds(ov_llm_bundle, wanted, kept):
    """int4_top1_target on openvino: the int4 LM head stays when the compressed graph's next token agrees with the
    float graph's on calibration windows at least that often; below it the head is compressed again in int8."""
    quantize = {**INT4_MIXED[1], "lm_head_precision": "int4", "embedding_precision": "int8",
                "int4_top1_target": wanted}
    bundle, result = ov_llm_bundle("llama", [FP32[0], quantize], gates={"top1_agreement": 0.05})
    stats = result.manifest.passes[-1].stats
    assert stats["lm_head_precision"] == kept and stats["int4_top1_target"] == wanted
    assert 0.05 <= stats["int4_special_top1"] < 1.0  # the whole int4 graph, head included, on 16 x 64 tokens
    if kept == "int8":  # measured again, as written
        assert 0.05 <= stats["int8_special_top1"] <= 1.0
        assert "u8" in _constant_types(bundle / "model.xml")
    else:
        assert "int8_special_top1" not in stats


def test_openvino_quantize_finds_tied_lm_head_and_embedding(ov_llm_bundle):
    """GPT-2 shares one table between the embedding Gather and the LM head MatMul; Llama does not."""
    import openvino as ov

    from hfexport.backends._openvino.nncf import find_lm_head_and_embeddings

    for arch, tied in (("gpt2", True), ("llama", False)):
        model = ov.Core().read_model(str(ov_llm_bundle(arch)[0] / "model.xml"))
        lm_head, embeddings, found_tied = find_lm_head_and_embeddings(model)
        assert "lm_head" in lm_head and len(embeddings) == 1 and found_tied == tied
        assert ("wte" if arch == "gpt2" else "embed_tokens") in embeddings[0]


# -- the torch-free runtime ------------------------------------------------------------------------------------

_ISOLATED = TORCH_BLOCKER + """
from hfexport.runtime import load
model = load(sys.argv[1])
text = model.generate(["first prompt", "second"], max_new_tokens=4)
pieces = list(model.stream("third", max_new_tokens=4))
print(json.dumps({"texts": len(text), "backend": model.backend.backend, "heavy": sorted(m for m in sys.modules
      if m.split(".")[0] in ("torch", "transformers", "optimum", "nncf"))}))
"""


def test_openvino_generation_runtime_loads_and_runs_without_torch(ov_llm_bundle):
    bundle, _ = ov_llm_bundle("llama", INT8, gates={"top1_agreement": 0.7})
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"texts": 2, "backend": "openvino", "heavy": []}


# -- the CLI end to end -----------------------------------------------------------------------------------------


def test_cli_build_target_openvino_on_a_tiny_llm_folder(tiny_llm, tmp_path):
    from click.testing import CliRunner

    from hfexport.cli import main

    out = tmp_path / "bundle"
    # No --recipe: the openvino target's text-generation default (llm-int4). --no-gates: a
    # 64-wide random model cannot reach the 0.9 top-1 gate in int4; the report still records it.
    result = CliRunner().invoke(main, ["build", "-m", str(tiny_llm("qwen2")), "--target", "openvino", "-o", str(out),
                                       "--no-gates", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.recipe.name == "llm-int4"
    assert [p.name for p in manifest.passes] == ["export", "quantize"]
    assert manifest.target.backend == "openvino" and manifest.target.precision == "int4"
    # The target's int4 LLMs compute bf16 where the CPU has it natively: the runtime resolves auto per machine,
    # and the validation says what this one computed.
    assert manifest.target.session["openvino"]["inference_precision"] == "auto"
    assert manifest.passes[1].stats["session_inference_precision"] == "auto"
    runtime = json.loads((out / "report" / "report.json").read_text())["target"]["runtime"]
    assert runtime["asked_precision"] == "auto" and runtime["inference_precision"] in ("bf16", "f32")
    assert (out / "report" / "report.html").is_file()
    run = CliRunner().invoke(main, ["run", str(out), "Once upon", "--max-new-tokens", "5"], catch_exceptions=False)
    assert run.exit_code == 0 and run.output.strip()


# -- planning ----------------------------------------------------------------------------------------------------


def _plan(tiny_llm, *specs, target="openvino", recipe=None):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.profiles import load_target
    from hfexport.recipes import PassSpec, Recipe

    recipe = recipe or Recipe(name="t", passes=[PassSpec(**s) for s in specs])
    return make_plan(PlanContext(load_target(target), recipe, resolve_model(str(tiny_llm("llama")))))


def test_openvino_target_defaults_to_openvino_llm_int4_for_text_generation(tiny_llm):
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

    target = load_target("openvino")
    assert target.recipe_for("text-generation") == "llm-int4"
    assert target.recipe_for("feature-extraction") == "default"
    plan = _plan(tiny_llm, recipe=load_recipe("llm-int4"))
    assert plan.describe() == ("export(openvino, generation, stateful) -> quantize(int4, weights only, group 32, "
                               "int4 LM head while top-1 >= 0.93, computes auto)")


@pytest.mark.parametrize("specs, target, message", [
    ([{"type": "export_openvino"}], "openvino", "needs a KV cache: use export_openvino_generation"),
    ([{"type": "export_openvino_generation"}], "cpu", "deploys onnx, not OpenVINO IR"),
    ([FP32[0], {"type": "quantize", "precision": "int8", "mode": "static"}], "openvino",
     "mode: static does not calibrate text-generation graphs"),
    ([FP32[0], {"type": "quantize", "precision": "int8", "lm_head_precision": "fp32"}], "openvino",
     "lm_head_precision applies to weight-only quantisation"),
    ([FP32[0], {"type": "quantize", "precision": "int8", "weights_only": True, "group_size": 32}], "openvino",
     "groups are for int4"),
    ([{"type": "export_onnx_generation"}, {"type": "quantize", "precision": "int8", "embedding_precision": "int8"}],
     "cpu", "embedding_precision applies to weight-only quantisation"),
    ([{"type": "export_onnx_generation"}, {"type": "quantize", "precision": "int4", "weights_only": True,
                                           "inference_precision": "bf16"}], "cpu", "inference_precision"),
])  # fmt: skip
def test_plan_rejects_impossible_openvino_llm_chains(tiny_llm, specs, target, message):
    from hfexport.errors import PlanError

    with pytest.raises(PlanError, match=message):
        _plan(tiny_llm, *specs, target=target)


def test_a_recipe_sets_the_openvino_bundle_s_compute_precision(tiny_llm):
    """A quantize step's inference_precision wins over the target's llm.int4 default (auto)."""
    plan = _plan(tiny_llm, FP32[0], {"type": "quantize", "precision": "int4", "weights_only": True,
                                     "group_size": 32, "inference_precision": "f32"})
    assert plan.describe().endswith("int4 LM head while top-1 >= 0.93, computes f32)")


def test_plan_int8_with_an_int4_lm_head_takes_a_group_size(tiny_llm):
    plan = _plan(tiny_llm, FP32[0], {"type": "quantize", "precision": "int8", "weights_only": True,
                                     "group_size": 32, "lm_head_precision": "int4"})
    assert plan.describe().endswith("quantize(int8, weights only, group 32)")
