"""Bad inputs a new user meets: each gives one `error:` line that names the file or option and what to do,
a non-zero exit, and no traceback; never an "unexpected ..." error. Click's usage errors exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hfexport.cli import main
from tests.tiny_bundle import make_bundle, write_manifest


def _key_pair(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "key.pem", folder / "key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every file and folder the bad inputs point at, made once."""
    root = tmp_path_factory.mktemp("bad")
    w = {"root": root, "bundle": make_bundle(root / "bundle")}
    (root / "bad.yaml").write_text("backend: [unclosed\n")
    (root / "unknown-field.yaml").write_text("schema_version: 1\nbackend: onnxruntime\nwheels: 4\n")
    (root / "no-config").mkdir()
    (root / "corrupt-config").mkdir()
    (root / "corrupt-config" / "config.json").write_text('{"model_type": "bert", "archi')
    truncated = root / "truncated-weights"
    truncated.mkdir()
    (truncated / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}).encode()
    (truncated / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 40)
    ok = root / "model-ok"
    ok.mkdir()
    (ok / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (ok / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 400)
    (root / "empty.txt").write_text("")
    (root / "exists").mkdir()
    (root / "garbage.pem").write_text("not a key")
    w["key"], w["pub"] = _key_pair(root)
    (root / "corrupt-manifest").mkdir()
    (root / "corrupt-manifest" / "manifest.json").write_text("{not json")
    newer = make_bundle(root / "newer")
    body = json.loads((newer / "manifest.json").read_text())
    write_manifest(newer, {**body, "format_version": 99}, rehash=False)
    tampered = make_bundle(root / "tampered")
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes()[:-3] + b"xyz")
    escaping = make_bundle(root / "escaping")
    write_manifest(escaping, {**json.loads((escaping / "manifest.json").read_text()), "model_file": "../x.onnx"},
                   rehash=False)
    linked = make_bundle(root / "linked")
    os.symlink("/etc/hostname", linked / "notes.txt")
    broken_tok = make_bundle(root / "broken-tokenizer")
    (broken_tok / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    write_manifest(broken_tok)
    w["signed"] = make_bundle(root / "signed")
    return w


R = "{root}"
# (id, argv, words the error line must contain)
CASES = [
    ("unknown target", ["build", "--target", "cpux"], ["'cpux'", "did you mean 'cpu'"]),
    ("unknown recipe", ["build", "--recipe", "defalt", "-o", R + "/o"], ["'defalt'", "did you mean 'default'"]),
    ("unknown task", ["build", "--task", "feature-extractoin", "-o", R + "/o"],
     ["'feature-extractoin'", "did you mean 'feature-extraction'"]),
    ("missing target file", ["build", "--target", "nope.yaml"], ["target file not found: nope.yaml"]),
    ("malformed target yaml", ["build", "--target", R + "/bad.yaml"], ["bad.yaml"]),
    ("target with unknown field", ["build", "--target", R + "/unknown-field.yaml"], ["unknown-field.yaml", "wheels"]),
    ("missing recipe file", ["build", "--recipe", R + "/nope.yaml"], ["recipe file not found", "nope.yaml"]),
    ("missing model folder", ["build", "--model", R + "/nope", "-o", R + "/o"], ["model folder not found"]),
    ("model without config.json", ["build", "--model", R + "/no-config", "-o", R + "/o"], ["no config.json"]),
    ("corrupt config.json", ["build", "--model", R + "/corrupt-config", "-o", R + "/o"],
     ["config.json", "not valid JSON", "re-download"]),
    ("truncated safetensors", ["build", "--model", R + "/truncated-weights", "-o", R + "/o"],
     ["model.safetensors", "truncated", "re-download"]),
    ("missing calibration data", ["build", "--calibration-data", R + "/nope.txt", "-o", R + "/o"], ["nope.txt"]),
    ("empty eval data", ["build", "--eval-data", R + "/empty.txt", "-o", R + "/o"], ["empty.txt"]),
    ("output exists", ["build", "-o", R + "/exists"], ["exists", "--force"]),
    ("missing signing key", ["build", "--sign-with", R + "/nope.pem", "-o", R + "/o"], ["nope.pem"]),
    ("garbage signing key", ["build", "--sign-with", R + "/garbage.pem", "-o", R + "/o"], ["garbage.pem"]),
    ("inspect missing bundle", ["inspect", R + "/nope"], ["bundle folder not found"]),
    ("inspect a folder that is no bundle", ["inspect", R + "/exists"], ["not an hfexport bundle", "manifest.json"]),
    ("inspect corrupt manifest", ["inspect", R + "/corrupt-manifest"], ["manifest.json", "unreadable manifest"]),
    ("inspect newer format", ["inspect", R + "/newer"], ["format 99", "pip install -U hfexport"]),
    ("run missing bundle", ["run", R + "/nope", "hi"], ["bundle folder not found"]),
    ("run tampered bundle", ["run", R + "/tampered", "hi"], ["model.onnx", "checksum"]),
    ("run escaping path", ["run", R + "/escaping", "hi"], ["'../x.onnx'", "outside the bundle"]),
    ("run bundle with a link", ["run", R + "/linked", "hi"], ["notes.txt", "symbolic link"]),
    ("run broken tokenizer", ["run", R + "/broken-tokenizer", "hi"], ["tokenizer.json", "rebuild the bundle"]),
    ("run with missing public key", ["run", R + "/bundle", "hi", "--public-key", R + "/nope.pub"],
     ["public key not found", "nope.pub"]),
    ("run unsigned with a key", ["run", R + "/bundle", "hi", "--public-key", R + "/key.pub"],
     ["not signed", "hfexport sign"]),
    ("sign with missing key", ["sign", R + "/signed", "--private-key", R + "/nope.pem"],
     ["private key not found", "nope.pem", "openssl"]),
    ("sign with garbage key", ["sign", R + "/signed", "--private-key", R + "/garbage.pem"],
     ["garbage.pem", "unreadable private key"]),
    ("verify unsigned", ["verify", R + "/bundle", "--public-key", R + "/key.pub"], ["not signed"]),
    ("verify with garbage key", ["verify", R + "/bundle", "--public-key", R + "/garbage.pem"],
     ["garbage.pem", "unreadable public key"]),
    ("validate missing bundle", ["validate", R + "/nope"], ["bundle folder not found"]),
]
USAGE_CASES = [
    ("run without texts", ["run", R + "/bundle"], ["give at least one text"]),
    ("run --chat on an encoder", ["run", R + "/bundle", "--chat"], ["--chat"]),
    ("threads not a number", ["build", "--threads", "abc"], ["--threads"]),
    ("bad log format", ["build", "--log-format", "xml"], ["--log-format"]),
    ("unknown command", ["buidl"], ["did you mean 'build'"]),
    ("sign without a key", ["sign", R + "/bundle"], ["--private-key"]),
]


def _invoke(world, argv):
    argv = [a.replace(R, str(world["root"])) for a in argv]
    return CliRunner().invoke(main, argv, catch_exceptions=True)


def _error_line(output: str, prefix: str) -> str:
    lines = [line for line in output.splitlines() if line.lower().startswith(prefix)]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("name,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_error_line(world, name, argv, words):
    result = _invoke(world, argv)
    assert result.exit_code not in (0, 2), (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    line = _error_line(result.output, "error: ")
    assert "Traceback" not in result.output and "unexpected" not in line, result.output
    for word in words:
        assert word.replace(R, str(world["root"])).lower() in line.lower(), (word, line)


@pytest.mark.parametrize("name,argv,words", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_bad_input_usage_error_exits_2(world, name, argv, words):
    result = _invoke(world, argv)
    assert result.exit_code == 2, (result.exit_code, result.output)
    line = _error_line(result.output, "error: ")
    assert "Traceback" not in result.output and "unexpected" not in line
    for word in words:
        assert word.lower() in line.lower(), (word, line)


def test_bad_input_list_is_long_enough():
    assert len(CASES) + len(USAGE_CASES) + 2 >= 25


def test_bad_input_json_log_format_errors_are_json_events(world):
    result = _invoke(world, ["build", "--log-format", "json", "--target", "cpux"])
    assert result.exit_code == 1
    event = json.loads(result.output.strip().splitlines()[-1])
    assert event["event"] == "error" and "did you mean 'cpu'" in event["message"] and event["exit_code"] == 1


def test_bad_input_verbose_accepted_after_the_command(world):
    result = _invoke(world, ["build", "--target", "cpux", "--verbose"])
    assert result.exit_code == 1 and "No such option" not in result.output
    assert "Traceback" in result.output  # --verbose shows it, wherever it was given
    assert _invoke(world, ["--verbose", "build", "--target", "cpux"]).exit_code == 1


# The base install: torch, transformers and optimum are not there (ModuleNotFoundError, as Python raises it).
BASE_INSTALL = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers", "optimum"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
"""


@pytest.mark.parametrize("argv,words", [
    (["build", "--model", "{root}/model-ok", "-o", "{root}/o"], ["hfexport build", "pip install 'hfexport[build]'"]),
    (["validate", "{root}/bundle"], ["hfexport validate", "pip install 'hfexport[build]'"]),
])
def test_bad_input_base_install_names_the_extra(world, argv, words):
    """On the base install (torch and transformers unimportable) build and validate say what to install."""
    argv = [a.format(root=world["root"]) for a in argv]
    code = BASE_INSTALL + f"import sys; sys.argv = ['hfexport'] + {argv!r}\nfrom hfexport.cli import main\nmain()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    line = _error_line(result.stderr, "error: ")
    assert "Traceback" not in result.stderr and "unexpected" not in line
    for word in words:
        assert word in line, (word, line)
