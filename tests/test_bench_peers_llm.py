"""scripts/bench_peers_llm.py: the plan it prints without installing, and how it scores fidelity (its timings and
peer builds need the peers' environments: the script itself is the end-to-end check)."""

from __future__ import annotations

import json

import numpy as np

from tests.test_bench_scripts import _script


def test_bench_peers_llm_dry_run_plans_every_side_without_installing(tmp_path, capsys):
    bench = _script("bench_peers_llm")
    venvs = tmp_path / "venvs"
    assert bench.main(["--dry-run", "--venvs", str(venvs), "--threads", "1", "2", "--processes", "3"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sides"] == ["hfexport cpu llm-fp32", "hfexport cpu llm-int4", "hfexport openvino llm-int4",
                             "hfexport openvino llm-fp32", "hfexport openvino llm-int4 f32", "onnxruntime-genai fp32",
                             "onnxruntime-genai int4",
                             "openvino-genai int4", "llama.cpp q8_0", "llama.cpp q4_K_M"]
    venv = {v["peer"]: v for v in plan["venvs"]}
    assert sorted(venv) == ["llama-cpp", "onnxruntime-genai", "openvino-genai"]
    assert not any(v["exists"] for v in venv.values())
    for peer in ("onnxruntime-genai", "openvino-genai", "llama-cpp"):
        assert "torch==2.13.0" in venv[peer]["pip"]  # the local CPU wheel, never CUDA's
    assert "onnxruntime-genai==0.18.0" in venv["onnxruntime-genai"]["pip"]
    assert "openvino-genai==2026.4.1.0" in venv["openvino-genai"]["pip"]
    assert venv["llama-cpp"]["python"] == "3.12" and venv["llama-cpp"]["sources"].startswith("llama-cpp-python==")
    builds = {b["side"]: b["how"] for b in plan["builds"]}
    assert "-p int4 -e cpu" in builds["onnxruntime-genai int4"]
    assert "--weight-format int4" in builds["openvino-genai int4"]
    assert "Q4_K_M" in builds["llama.cpp q4_K_M"]
    assert plan["timings"]["processes_total"] == 10 * 2 * 3
    assert "inference_precision" in builds["hfexport openvino llm-int4 f32"]
    assert plan["timings"]["prompt_tokens"] == 128 and plan["timings"]["new_tokens"] == 64
    assert plan["timings"]["decoding"] == "greedy"
    assert not venvs.exists()  # nothing installed, nothing made
    assert bench.main(["--dry-run", "--venvs", str(venvs), "--sample"]) == 0  # sampled decoding, every engine alike
    sampled = json.loads(capsys.readouterr().out)["timings"]["decoding"]
    assert sampled == {"temperature": 0.6, "top_k": 50, "top_p": 0.9, "seed": 0}


def test_bench_peers_llm_dry_run_with_a_subset_plans_only_the_peers_it_needs(tmp_path, capsys):
    bench = _script("bench_peers_llm")
    assert bench.main(["--dry-run", "--venvs", str(tmp_path / "v"), "--sides", "hfexport cpu llm-int4",
                       "onnxruntime-genai int4", "--threads", "2", "--processes", "4"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [v["peer"] for v in plan["venvs"]] == ["onnxruntime-genai"]
    assert plan["timings"]["processes_total"] == 2 * 1 * 4


def test_bench_peers_llm_scores_greedy_and_teacher_forced_against_the_reference():
    bench = _script("bench_peers_llm")
    reference = [[1, 2, 3, 4], [5, 6, 7, 8]]
    greedy = [[1, 2, 3, 4], [5, 6, 9, 9]]  # the first equal, the second leaves PyTorch's path after 2 tokens
    forced = [[1, 2, 0, 4], [5, 6, 7, 8]]  # 7 of 8 next tokens agree
    score = bench._fidelity(reference, greedy, forced, np)
    assert score == {"greedy_match": 0.5, "greedy_common_prefix": 3.0, "top1_agreement": 7 / 8, "top1_positions": 8}
    row = {"side": "x", "threads": 2, "ttft_ms": 10.0, "ttft_range": [9.0, 11.0], "decode_tok_s": 300.0,
           "decode_range": [290.0, 310.0], "size_mb": 12.5, **score}
    table = bench._markdown({"prompt_tokens": 128, "new_tokens": 4, "processes": 3, "load_before": 0.5,
                             "load_after": 0.6, "prompts": 2, "rows": [row]})
    assert "| x | 2 | 10.0 (9.0-11.0) | 300 (290-310) | 0.50 (3.0 of 4) | 0.875 (7/8) | 12.5 |" in table


def test_bench_peers_llm_paired_plans_only_pairs_whose_sides_run_and_tables_their_ratio(tmp_path, capsys):
    """--paired: hfexport and its peer on the same runtime library, timed in one process; a pair is planned only
    when both of its sides are."""
    bench = _script("bench_peers_llm")
    assert bench.main(["--dry-run", "--venvs", str(tmp_path / "v"), "--paired", "--sides", "hfexport cpu llm-int4",
                       "onnxruntime-genai int4", "hfexport openvino llm-int4"]) == 0
    assert json.loads(capsys.readouterr().out)["paired"] == [["hfexport cpu llm-int4", "onnxruntime-genai int4"]]
    assert bench.main(["--dry-run", "--venvs", str(tmp_path / "v")]) == 0
    assert json.loads(capsys.readouterr().out)["paired"] == []  # off unless asked
    pair = {"side": "hfexport cpu llm-int4", "peer": "onnxruntime-genai int4", "threads": 2, "decode_tok_s": 700.0,
            "peer_decode_tok_s": 710.0, "ratio": 0.99, "ratio_range": [0.9, 1.05], "ttft_ms": 26.0,
            "peer_ttft_ms": 52.0, "rounds": 10}
    table = bench._markdown({"prompt_tokens": 128, "new_tokens": 4, "processes": 3, "load_before": 0.5,
                             "load_after": 0.6, "prompts": 2, "rows": [], "paired": [pair]})
    assert "| hfexport cpu llm-int4 | onnxruntime-genai int4 | 2 | 700 | 710 | 0.99x (0.90-1.05) | 26.0 | 52.0 |" \
        in table
