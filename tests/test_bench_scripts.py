"""The benchmark scripts' own model making and training (their timings are not tested, only that they run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_bench_generation_trains_its_model_as_a_causal_lm(tmp_path):
    import torch
    import transformers

    bench = _script("bench_generation")
    folder = bench.make_model(tmp_path / "model", layers=1, hidden=64, vocab=400)
    data = tmp_path / "train.txt"
    data.write_text("\n".join(f"the cat number {i} sat on the mat and looked at the dog." for i in range(200)))
    before = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()

    bench.train_model(folder, data, steps=300, sequence=16, batch=8)

    record = json.loads((folder / "training.json").read_text())
    assert record["steps"] == 300 and record["tokens"] > 200 * 10
    # 300 steps (100 of them warm-up) on one repeated sentence: the loss falls far below ln(400) = 6.0.
    assert record["loss_last_100"] < record["loss_first"] - 1.0
    after = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    assert not torch.equal(after.state_dict()["model.layers.0.mlp.up_proj.weight"],
                           before["model.layers.0.mlp.up_proj.weight"])
    # The trained checkpoint predicts its text: after "... sat on the" comes the first token of " mat".
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    prefix = tokenizer("the cat number 7 sat on the")["input_ids"]
    full = tokenizer("the cat number 7 sat on the mat")["input_ids"]
    assert full[:len(prefix)] == prefix
    with torch.no_grad():
        logits = after(input_ids=torch.tensor([prefix])).logits[0, -1]
    assert int(logits.argmax()) == full[len(prefix)]


def test_bench_peers_dry_run_plans_without_installing(tmp_path, capsys):
    bench = _script("bench_peers")
    venvs = tmp_path / "venvs"
    assert bench.main(["--dry-run", "--venvs", str(venvs), "--threads", "1", "2", "--processes", "3"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # Both rows by default: ONNX Runtime (cpu bundles vs optimum-onnx) and OpenVINO (openvino bundles vs optimum-intel)
    assert plan["targets"] == ["cpu", "openvino"]
    assert [v["peer"] for v in plan["venvs"]] == ["optimum-onnx", "optimum-intel"]
    assert not any(v["exists"] for v in plan["venvs"])
    assert all("torch==2.13.0" in v["pip"] for v in plan["venvs"])  # the local CPU wheel, never CUDA's
    assert plan["venvs"][1]["pip_uninstall"] == ["torchvision"]  # PyPI's CUDA build breaks transformers' imports
    assert plan["sides"] == ["hfexport cpu default", "hfexport cpu int8-small", "hfexport openvino default",
                             "hfexport openvino int8-weights", "optimum-onnx", "optimum-intel"]
    assert plan["timings"]["processes_total"] == 6 * 2 * 3
    builds = {b["side"]: b for b in plan["builds"]}
    assert builds["hfexport openvino default"]["how"].startswith("hfexport build --target openvino --recipe default")
    assert builds["optimum-onnx"]["isa_preset"] in ("avx512_vnni", "avx512", "avx2", "arm64")
    assert builds["optimum-intel"]["artifact"].endswith("openvino_model.xml")
    assert "default_calibration_texts" in builds["optimum-intel"]["calibration"]  # no hub dataset
    assert not venvs.exists()  # nothing installed, nothing made

    # One row alone: --targets openvino plans only the OpenVINO sides and its peer.
    assert bench.main(["--dry-run", "--venvs", str(venvs), "--targets", "openvino", "--threads", "2",
                       "--processes", "1", "--openvino-recipes", "default"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sides"] == ["hfexport openvino default", "optimum-intel"]
    assert [v["peer"] for v in plan["venvs"]] == ["optimum-intel"]
    assert plan["timings"]["processes_total"] == 2
    assert not venvs.exists()


def test_bench_peers_paired_pairs_each_bundle_with_its_targets_peer_and_tables_the_ratio(tmp_path, capsys):
    bench = _script("bench_peers")
    assert bench.main(["--dry-run", "--venvs", str(tmp_path / "v"), "--paired", "--targets", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["paired"] == [["hfexport cpu default", "optimum-onnx"],
                                                             ["hfexport cpu int8-small", "optimum-onnx"]]
    assert bench.main(["--dry-run", "--venvs", str(tmp_path / "v")]) == 0
    assert json.loads(capsys.readouterr().out)["paired"] == []  # off unless asked
    row = {"side": "hfexport cpu default", "peer": "optimum-onnx", "threads": 2, "rounds": 8, "b1_ms": 21.5,
           "peer_b1_ms": 23.4, "b1_ms_ratio": 1.09, "b1_ms_ratio_range": [1.0, 1.2], "b32_ms": 571.4,
           "peer_b32_ms": 539.8, "b32_ms_ratio": 0.95, "b32_ms_ratio_range": [0.86, 1.04]}
    table = bench.markdown({"load_before": 0.1, "load_after": 0.2, "isa_preset": "avx2", "processes": 3, "wall_s": 9,
                            "rows": [], "paired": [row]})
    assert ("| hfexport cpu default | optimum-onnx | 2 | 21.5 (23.4) | 1.09x (1.00-1.20) | 571.4 (539.8) | "
            "0.95x (0.86-1.04) |") in table


def test_bench_peers_refuses_a_peer_outside_its_targets(capsys):
    bench = _script("bench_peers")
    with pytest.raises(SystemExit) as exited:
        bench.main(["--dry-run", "--targets", "cpu", "--peers", "optimum-intel"])
    assert exited.value.code == 2
    assert "--peers optimum-intel belongs to target openvino: add it to --targets" in capsys.readouterr().err
