"""Structured and magnitude pruning, and distillation, on tiny random-init models."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
import transformers

from hfexport.errors import PlanError
from hfexport.progress import Progress
from tests.conftest import make_tiny_model


def _build(folder, passes, tmp_path, name="out", gates=None, **kwargs):
    from hfexport.api import build

    recipe = tmp_path / f"{name}.json"
    recipe.write_text(json.dumps({"schema_version": 1, "passes": passes,
                                  "gates": gates or {"cosine_mean": 0.0, "cosine_min": -1.0},
                                  "evaluation": {"samples": 16, "latency_runs": 5, "sequence_length": 32,
                                                 "batch_size": 4, "memory": False}}))
    return build(str(folder), recipe=str(recipe), output=tmp_path / name, progress=Progress("quiet"), **kwargs)


def _pass_record(result, name):
    return next(p for p in result.manifest.passes if p.name == name)


def _context(folder, task):
    """A BuildContext for running one pass directly on a tiny model folder."""
    from hfexport.build.engine import _prepare_tokenizer
    from hfexport.context import BuildContext
    from hfexport.data import default_calibration_texts
    from hfexport.loading import resolve_model
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

    source = resolve_model(str(folder), task=task)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix="pass-"))
    return BuildContext(load_target("cpu"), load_recipe("fp32"), source, work,
                        _prepare_tokenizer(source, work / "tokenizer"), default_calibration_texts(),
                        Progress("quiet"))


def _prune_only(folder, ctx_task, config):
    """Run PrunePass directly and return the saved checkpoint folder."""
    from hfexport.artifacts import TorchModel
    from hfexport.passes.prune import PruneConfig, PrunePass

    ctx = _context(folder, ctx_task)
    step = PrunePass(PruneConfig(**config))
    return step.run(TorchModel(folder), ctx)


def test_prune_bert_shrinks_ffn_and_layers_exactly_and_reloads(tiny_model):
    result = _prune_only(tiny_model(), "feature-extraction", {"ffn_keep": 0.5, "layers_keep": 1})
    model = transformers.AutoModel.from_pretrained(str(result.path))
    assert model.config.intermediate_size == 32 and model.config.num_hidden_layers == 1
    assert len(model.encoder.layer) == 1
    assert model.encoder.layer[0].intermediate.dense.weight.shape == (32, 32)
    assert model.encoder.layer[0].output.dense.weight.shape == (32, 32)
    assert result.stats["parameters_after"] < result.stats["parameters_before"]
    assert len(result.stats["kept_layers"]) == 1
    out = model(**transformers.AutoTokenizer.from_pretrained(str(result.path))(["hello there"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 32


def test_prune_distilbert_uses_its_own_config_keys(tiny_model):
    result = _prune_only(tiny_model("distilbert"), "feature-extraction", {"ffn_keep": 16, "layers_keep": 0.5})
    config = transformers.AutoConfig.from_pretrained(str(result.path))
    assert config.hidden_dim == 16 and config.n_layers == 1


def test_prune_protected_layer_is_kept(tiny_model):
    result = _prune_only(tiny_model(), "feature-extraction", {"layers_keep": 1, "protect_layers": [-1]})
    assert result.stats["kept_layers"] == [1]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_prune_decoder_heads_by_kv_group_keeps_gqa_consistent(tmp_path, arch):
    from tests.conftest import _roberta_tokenizer

    folder = tmp_path / arch
    vocab = len(_roberta_tokenizer(folder))  # byte-level BPE, as these decoders use
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[arch]
    config = config_class(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=4, head_dim=8, pad_token_id=1)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))

    result = _prune_only(folder, "feature-extraction", {"heads_keep": 0.5, "ffn_keep": 0.5})
    pruned = transformers.AutoModelForCausalLM.from_pretrained(str(result.path))
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 8)
    attn = pruned.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (32, 64) and attn.k_proj.weight.shape == (16, 64)
    assert attn.o_proj.weight.shape == (64, 32) and cfg.intermediate_size == 48
    ids = torch.tensor([[1, 2, 3, 4]])
    assert pruned(input_ids=ids).logits.shape == (1, 4, vocab)
    assert result.stats["kv_heads"] == [4, 2]


def test_prune_encoder_heads_is_refused_before_work(tiny_model, tmp_path):
    with pytest.raises(PlanError, match="heads_keep: bert heads cannot be pruned"):
        _build(tiny_model(), [{"type": "prune", "heads_keep": 0.5}, {"type": "export_onnx"}], tmp_path)
    assert not (tmp_path / "out").exists()


def test_prune_magnitude_is_permanent_and_reported(tiny_model):
    result = _prune_only(tiny_model(), "feature-extraction", {"method": "magnitude", "sparsity": 0.5})
    model = transformers.AutoModel.from_pretrained(str(result.path))
    weight = model.encoder.layer[0].intermediate.dense.weight
    assert abs(float((weight == 0).float().mean()) - 0.5) < 0.02
    assert not any("mask" in name for name, _ in model.named_buffers())
    assert result.stats["sparsity"] == pytest.approx(0.5, abs=0.01) and "dense kernels" in result.stats["note"]


def test_distill_recovers_what_pruning_lost(tmp_path):
    # A wider init than the default makes every layer matter, so pruning visibly hurts.
    folder = make_tiny_model(tmp_path / "teacher", "bert", "feature-extraction", init_range=0.2)
    passes = [{"type": "prune", "ffn_keep": 0.25, "layers_keep": 1},
              {"type": "distill", "epochs": 6, "learning_rate": 0.003, "eval_every": 5, "patience": 10,
               "batch_size": 16},
              {"type": "export_onnx"}]
    result = _build(folder, passes, tmp_path)
    stats = _pass_record(result, "distill")["stats"]
    assert stats["held_out_after"] > stats["held_out_before"] + 0.02
    losses = [h["loss"] for h in stats["history"]]
    assert losses[-1] < losses[0]
    stages = {s.name: s for s in result.report.stages}
    assert stages["distill"].fidelity["cosine_mean"] > stages["prune"].fidelity["cosine_mean"]


def test_distill_hidden_targets_follow_the_span_each_student_layer_replaces():
    from hfexport.passes.distill.losses import hidden_targets

    # hidden_states[j] is what teacher layer j reads; the last entry is the final output.
    assert hidden_targets([0, 4, 5], 6) == [4, 5, 6]
    assert hidden_targets([1, 3, 5], 6) == [3, 5, 6]
    assert hidden_targets([0, 1, 2], 6) == [1, 2, 6]  # the last student layer stands in for 2..5
    assert hidden_targets([0, 4, 5], 6, "copied") == [1, 5, 6]


def test_distill_layer_map_composes_chained_prunes(tmp_path):
    from hfexport.artifacts import TorchModel
    from hfexport.passes.distill.distill_pass import layer_map

    history = [{"prune": {"kept_layers": [0, 2, 4, 5]}}, {"distill": {"steps": 10}},
               {"prune": {"kept_layers": [0, 2, 3], "ffn_width": [64, 32]}}]
    (tmp_path / "hfexport_history.json").write_text(json.dumps(history))
    # The second prune's indices name the first prune's survivors: teacher layers 0, 4 and 5.
    assert layer_map(TorchModel(tmp_path)) == [0, 4, 5]
    (tmp_path / "hfexport_history.json").write_text(json.dumps(history[1:2]))
    assert layer_map(TorchModel(tmp_path)) is None


def test_distill_augmenter_edits_texts_deterministically():
    from hfexport.passes.distill.augment import Augmenter

    texts = ["the cat sat on the warm mat all afternoon", "a quick brown fox jumps over the lazy dog today",
             "rain is expected in the north by the evening"]
    first, second = Augmenter(texts, 3), Augmenter(texts, 3)
    edited = [first(texts) for _ in range(5)]
    assert edited == [second(texts) for _ in range(5)]
    flat = [e for batch in edited for e in batch]
    assert sum(e not in texts for e in flat) >= len(flat) - 2  # nearly every copy is edited
    assert all(e.strip() for e in flat)


def test_embedding_neighbours_are_the_nearest_whole_words_and_swaps_keep_case():
    from hfexport.passes.distill.augment import Augmenter, embedding_neighbours

    words = ["river", "creek", "stream", "happy", "glad", "cheerful", "##ing", "[CLS]", "the"]
    table = torch.zeros(len(words), 4)
    table[:3, 0], table[3:6, 1], table[6:, 2] = 1.0, 1.0, 1.0
    table[1, 3], table[4, 3] = 0.1, 0.1  # creek and glad are slightly off their group's direction

    class Words:
        def get_vocab(self):
            return {w: i for i, w in enumerate(words)}

    model = torch.nn.Module()
    model.get_input_embeddings = lambda: torch.nn.Embedding.from_pretrained(table)
    table_of = embedding_neighbours(model, Words(), ["The River was happy, the end."], k=2)
    assert table_of == {"river": ["stream", "creek"], "happy": ["cheerful", "glad"]}
    augmenter = Augmenter(["x"], 0, table_of)
    assert augmenter._neighbour("River,") in ("Stream,", "Creek,")
    assert augmenter._neighbour("boat") == "boat"


def test_relation_kl_is_zero_for_equal_relations_and_ignores_padding():
    from hfexport.passes.distill.losses import relation_kl

    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert float(relation_kl(x, x, mask, 2, causal=False)) == pytest.approx(0.0, abs=1e-6)
    base = float(relation_kl(x, y, mask, 2, causal=False))
    assert base > 0.01
    changed = y.clone()
    changed[1, 3:] = 100.0  # padded tokens: neither queries nor keys may count
    assert float(relation_kl(x, changed, mask, 2, causal=False)) == pytest.approx(base, rel=1e-5)
    # Causal: when only the last token differs, only the last query's relations differ (earlier queries
    # never see it as a key), so the loss is that query's KL over the 5 real queries.
    last = x.clone()
    last[:, 4] = y[:, 4]
    full = torch.ones(2, 5, dtype=torch.long)
    t, s = (torch.softmax(v[:, 4:5] @ v.transpose(1, 2) / 8 ** 0.5, -1)[:, 0] for v in (x, last))
    expected = float((t * (t.log() - s.log())).sum(-1).mean()) / 5
    assert float(relation_kl(last, x, full, 1, causal=True)) == pytest.approx(expected, rel=1e-4)
    assert float(relation_kl(last, x, full, 1, causal=False)) > expected * 1.5


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_relation_tap_captures_the_last_layers_query_key_value(tmp_path, arch):
    from hfexport.passes.distill.losses import QKVTap, heads_per_projection

    model = transformers.AutoModel.from_pretrained(make_tiny_model(tmp_path / arch, arch, "feature-extraction"))
    tap = QKVTap(model)
    model(input_ids=torch.tensor([[2, 5, 6, 3]]))
    assert [tuple(t.shape) for t in tap.captured] == [(1, 4, 32)] * 3
    assert heads_per_projection(model.config) == [4, 4, 4]
    last = model.transformer.layer[-1].attention if arch == "distilbert" else model.encoder.layer[-1].attention.self
    query = last.q_lin if arch == "distilbert" else last.query
    assert torch.equal(tap.captured[0], query(model(input_ids=torch.tensor([[2, 5, 6, 3]]),
                                                     output_hidden_states=True).hidden_states[-2]))
    tap.remove()
    assert not query._forward_hooks


def test_relation_loss_on_grouped_query_attention_with_fewer_student_heads():
    from hfexport.passes.distill.losses import QKVTap, heads_per_projection, relation_kl

    def llama(heads, kv_heads):
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=8)
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config)

    teacher, student = llama(8, 4), llama(4, 2)  # as head pruning leaves it: half the heads, GQA kept
    ids, mask = torch.tensor([[5, 6, 7, 8, 9]]), torch.ones(1, 5, dtype=torch.long)
    with QKVTap(teacher) as t_tap, QKVTap(student) as s_tap, torch.no_grad():
        teacher(input_ids=ids), student(input_ids=ids)
    heads = heads_per_projection(teacher.config)
    assert heads == [8, 4, 4]
    assert [x.shape[-1] for x in t_tap.captured] == [64, 32, 32]
    assert [x.shape[-1] for x in s_tap.captured] == [32, 16, 16]
    losses = [float(relation_kl(s, t, mask, h, causal=True))
              for s, t, h in zip(s_tap.captured, t_tap.captured, heads)]
    assert all(loss > 0 for loss in losses)
    assert not teacher.model.layers[-1].self_attn.q_proj._forward_hooks  # the context removed them


def test_distill_with_relation_loss_trains_the_student(tmp_path):
    folder = make_tiny_model(tmp_path / "teacher", "bert", "feature-extraction", init_range=0.2)
    passes = [{"type": "prune", "layers_keep": 1},
              {"type": "distill", "max_steps": 8, "eval_every": 4, "relation_weight": 1.0, "learning_rate": 0.003},
              {"type": "export_onnx"}]
    result = _build(folder, passes, tmp_path)
    stats = _pass_record(result, "distill")["stats"]
    assert stats["held_out_after"] > stats["held_out_before"]
    assert stats["precision"] in ("fp32", "bf16")


def test_diverse_selection_picks_distinct_texts_reproducibly(tmp_path):
    from contextlib import nullcontext

    from hfexport.passes.distill import DistillConfig
    from hfexport.passes.distill.losses import DistillLoss
    from hfexport.passes.distill.selection import diverse

    folder = make_tiny_model(tmp_path / "teacher", "bert", "feature-extraction", init_range=0.2)
    ctx = _context(folder, "feature-extraction")
    teacher = ctx.torch_module(folder).eval()
    pool = ctx.calibration_texts[:60]
    loss = DistillLoss(ctx, DistillConfig(), None, teacher.config)
    args = (teacher, loss, torch.device("cpu"), 0, Progress("quiet"), nullcontext())
    first = diverse(pool, 12, *args)
    assert len(first) == 12 and len(set(first)) == 12 and set(first) <= set(pool)
    assert diverse(pool, 12, *args) == first


def test_distill_select_diverse_runs_in_a_build(tmp_path):
    folder = make_tiny_model(tmp_path / "teacher", "bert", "feature-extraction", init_range=0.2)
    passes = [{"type": "prune", "layers_keep": 1},
              {"type": "distill", "max_steps": 2, "max_texts": 48, "select": "diverse", "batch_size": 16},
              {"type": "export_onnx"}]
    stats = _pass_record(_build(folder, passes, tmp_path), "distill")["stats"]
    assert stats["train_texts"] + stats["held_out_texts"] == 48


def test_distill_is_deterministic_with_a_seed(tmp_path):
    folder = make_tiny_model(tmp_path / "teacher", "bert", "feature-extraction", init_range=0.2)
    passes = [{"type": "prune", "layers_keep": 1}, {"type": "distill", "max_steps": 6, "eval_every": 3},
              {"type": "export_onnx"}]
    first = _pass_record(_build(folder, passes, tmp_path, "a"), "distill")["stats"]["history"]
    second = _pass_record(_build(folder, passes, tmp_path, "b"), "distill")["stats"]["history"]
    assert first == second


def test_whole_chain_prune_distill_export_optimize_int8(tiny_model, tmp_path):
    passes = [{"type": "prune", "ffn_keep": 0.5, "layers_keep": 1}, {"type": "distill", "max_steps": 4},
              {"type": "export_onnx"}, {"type": "optimize"}, {"type": "quantize"}]
    result = _build(tiny_model(), passes, tmp_path)
    assert [s.name for s in result.report.stages] == ["pytorch", "prune", "distill", "export_onnx", "optimize",
                                                      "bundle"]
    assert result.report.stage("prune").kind == "torch" and result.report.stage("prune").latency
    assert result.manifest.passes[0].stats["ffn_width"] == [64, 32]


def _sentence_transformers_folder(folder, flag: str, normalize: bool) -> None:
    """Add the sentence-transformers files that declare a pooling (and optionally Normalize) to a model folder."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  f"pooling_mode_{flag}": True}))


@pytest.mark.parametrize("mode, flag, normalize", [("max", "max_tokens", False), ("mean_sqrt_len", "mean_sqrt_len_tokens", True),
                                                   ("last", "lasttoken", False)])
def test_distill_target_is_the_models_own_pooling_as_the_runtime_computes_it(tmp_path, mode, flag, normalize):
    import numpy as np

    from hfexport.passes.distill import DistillConfig
    from hfexport.passes.distill.losses import DistillLoss
    from hfexport.runtime.tasks.feature_extraction import pool

    folder = make_tiny_model(tmp_path / "teacher", "bert", "feature-extraction", init_range=0.2)
    _sentence_transformers_folder(folder, flag, normalize)
    ctx = _context(folder, "feature-extraction")
    assert ctx.source.pooling == {"mode": mode, "normalize": normalize}
    teacher = ctx.torch_module(folder).eval()
    loss = DistillLoss(ctx, DistillConfig(), None, teacher.config)
    batch = loss.encode(["a short one", "a rather longer sentence, so the short one is padded"], torch.device("cpu"))
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # padding is in play
    targets = loss.targets(teacher, batch)
    with torch.no_grad():
        outputs = teacher(**batch, output_hidden_states=True)
    hidden, mask = outputs.last_hidden_state.numpy(), batch["attention_mask"].numpy()
    # Before normalisation (docs/decisions/0003): cosine is scale-free, and the MSE term keeps the recipe's scale.
    expected = pool(hidden, mask, mode, normalize=False)
    np.testing.assert_allclose(targets["pooled"].float().numpy(), expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(loss.compared(outputs, batch).numpy(), expected, rtol=1e-5, atol=1e-6)
    # The old loss pooled every mode but cls by the mean: that target is a different vector.
    assert not np.allclose(expected, pool(hidden, mask, "mean"), atol=1e-2)


def test_prune_and_distill_stats_parts_render_the_build_progress_line():
    from hfexport.passes.distill import DistillConfig, DistillPass
    from hfexport.passes.prune import PruneConfig, PrunePass

    prune = PrunePass(PruneConfig())
    structured = {"method": "structured", "parameters_before": 22_713_216, "parameters_after": 15_618_048,
                  "kept_layers": [0, 2, 5], "ffn_width": [1536, 768], "block_influence": [0.1, 0.2]}
    assert prune.stats_parts(structured) == ["22.7M -> 15.6M parameters", "kept layers [0, 2, 5], FFN 1536 -> 768"]
    magnitude = {"method": "magnitude", "parameters_before": 2_000_000, "parameters_after": 2_000_000,
                 "sparsity": 0.4987}
    assert prune.stats_parts(magnitude) == ["2.0M -> 2.0M parameters", "sparsity 0.50"]
    distilled = {"steps": 1410, "held_out_before": 0.57312, "held_out_after": 0.84611,
                 "held_out_metric": "cosine_mean", "precision": "bf16"}
    assert DistillPass(DistillConfig()).stats_parts(distilled) == [
        "held-out cosine_mean 0.5731 -> 0.8461 in 1410 steps"]


def test_distill_build_without_eval_data_is_judged_on_held_out_train_text(tmp_path):
    """--train-data and no --eval-data: the gates see a split of the training text the student never trained
    on, and the report shows the shipped everyday-English set beside it (not gated)."""
    folder = make_tiny_model(tmp_path / "m", "bert", "feature-extraction")
    train = tmp_path / "docstrings.txt"
    lines = [f"Return the {word} of the given {thing} as a list." for word in ("sum", "mean", "sorted keys",
             "first item", "last line", "unique values", "hash", "length") for thing in ("array", "file",
             "mapping", "string", "table", "queue", "tree", "stream", "frame", "graph")]
    train.write_text("\n".join(lines) + "\n")
    result = _build(folder, [{"type": "prune", "ffn_keep": 0.5},
                             {"type": "distill", "max_steps": 4, "eval_every": 2, "batch_size": 8},
                             {"type": "export_onnx"}], tmp_path, train_data=str(train))
    report = result.report
    assert report.evaluation.text_source.startswith("held-out split of --train-data")
    assert report.evaluation.samples == 16  # the recipe's samples, taken from the 80 lines (at most a fifth)
    assert set(report.other_fidelity) == {"hfexport held-out corpus"}
    assert "cosine_mean" in report.other_fidelity["hfexport held-out corpus"]
    stats = _pass_record(result, "distill")["stats"]
    assert stats["train_texts"] + stats["held_out_texts"] == len(lines) - 16  # the gate's split was never seen
