"""Signed bundles (model-signing): the round trip, and every way a bundle is refused when a key is given."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("model_signing")

from hfexport.cli import main  # noqa: E402
from hfexport.errors import BundleIntegrityError, SignatureError  # noqa: E402
from hfexport.runtime import load  # noqa: E402
from hfexport.runtime.signing import SIGNATURE_NAME, sign_bundle, signature_info, verify_bundle  # noqa: E402
from tests.tiny_bundle import make_bundle, write_manifest  # noqa: E402


def _key_pair(folder: Path, name: str, curve=None) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(curve or ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"ours": _key_pair(folder, "ours"), "other": _key_pair(folder, "other")}


@pytest.fixture
def signed(tmp_path, keys) -> Path:
    bundle = make_bundle(tmp_path / "bundle", external="weights.bin")
    sign_bundle(bundle, keys["ours"][0])
    return bundle


def test_signing_round_trip_loads_and_names_the_signer(signed, keys):
    info = verify_bundle(signed, keys["ours"][1])
    assert info.verified and info.signer.startswith("key sha256:")
    assert signature_info(signed).signer == info.signer and not signature_info(signed).verified
    predictor = load(signed, public_key=keys["ours"][1])
    assert predictor(["hello world"]).shape == (1, 8)
    assert load(signed)(["hello world"]).shape == (1, 8)  # unsigned loading stays the default


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _tampered_variants(signed: Path, keys) -> list[tuple[str, callable]]:
    """(name, change) pairs: each change, applied to a fresh copy of a signed bundle, must be refused."""
    files = sorted(p.relative_to(signed).as_posix() for p in signed.rglob("*")
                   if p.is_file() and p.name != SIGNATURE_NAME)
    variants = []
    for rel in files:
        variants.append((f"flip {rel}", lambda b, rel=rel: _flip(b / rel)))
        variants.append((f"delete {rel}", lambda b, rel=rel: (b / rel).unlink()))
        if rel != "manifest.json":
            # an attacker without the key rewrites the checksum table to match the changed file
            def rehash(b, rel=rel):
                _flip(b / rel)
                write_manifest(b, json.loads((b / "manifest.json").read_text()))

            variants.append((f"re-hashed {rel}", rehash))

            def truncate(b, rel=rel):
                (b / rel).write_bytes((b / rel).read_bytes()[:7])
                write_manifest(b, json.loads((b / "manifest.json").read_text()))

            variants.append((f"truncated, re-hashed {rel}", truncate))
    variants += [
        ("added file", lambda b: (b / "extra.txt").write_text("x")),
        ("added file, re-hashed", lambda b: ((b / "extra.txt").write_text("x"),
                                             write_manifest(b, json.loads((b / "manifest.json").read_text())))),
        ("unsigned", lambda b: (b / SIGNATURE_NAME).unlink()),
        ("signature truncated", lambda b: (b / SIGNATURE_NAME).write_bytes((b / SIGNATURE_NAME).read_bytes()[:100])),
        ("signature not JSON", lambda b: (b / SIGNATURE_NAME).write_text("not json")),
        ("signature bytes altered", _alter_signature_bytes),
        ("payload altered", _alter_payload),
        ("key hint removed", _drop_hint),
        ("re-signed by another key", lambda b: sign_bundle(b, keys["other"][0])),
    ]
    return variants


def _edit_signature(bundle: Path, change) -> None:
    body = json.loads((bundle / SIGNATURE_NAME).read_text())
    change(body)
    (bundle / SIGNATURE_NAME).write_text(json.dumps(body))


def _alter_signature_bytes(bundle: Path) -> None:
    def change(body):
        sig = bytearray(base64.b64decode(body["dsseEnvelope"]["signatures"][0]["sig"]))
        sig[10] ^= 0x01
        body["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()

    _edit_signature(bundle, change)


def _alter_payload(bundle: Path) -> None:
    def change(body):
        payload = json.loads(base64.b64decode(body["dsseEnvelope"]["payload"]))
        payload["predicate"]["resources"] = payload["predicate"]["resources"][:-1]
        body["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()

    _edit_signature(bundle, change)


def _drop_hint(bundle: Path) -> None:
    _edit_signature(bundle, lambda body: body["verificationMaterial"]["publicKey"].pop("hint"))


def test_signing_refuses_every_tampered_rehashed_or_unsigned_bundle(signed, keys, tmp_path):
    variants = _tampered_variants(signed, keys)
    refused = []
    for i, (name, change) in enumerate(variants):
        copy = tmp_path / f"v{i}"
        shutil.copytree(signed, copy)
        change(copy)
        with pytest.raises(SignatureError) as caught:
            load(copy, public_key=keys["ours"][1])
        message = str(caught.value)
        assert "\n" not in message and str(copy) in message, (name, message)
        refused.append(name)
    assert len(refused) == len(variants) >= 25  # 100% refused
    print(f"refused {len(refused)}/{len(variants)} tampered, re-hashed or unsigned bundles")


def test_signing_says_which_check_failed(signed, keys, tmp_path):
    with pytest.raises(SignatureError, match="signed by another key"):
        verify_bundle(signed, keys["other"][1])
    _flip(signed / "model.onnx")
    with pytest.raises(SignatureError, match="files changed after signing: changed model.onnx"):
        verify_bundle(signed, keys["ours"][1])
    (signed / SIGNATURE_NAME).unlink()
    with pytest.raises(SignatureError, match="not signed"):
        load(signed, public_key=keys["ours"][1])


def test_signing_refuses_bad_keys(signed, tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SignatureError, match="elliptic-curve"):
        sign_bundle(signed, rsa_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(SignatureError, match="unreadable private key"):
        sign_bundle(signed, garbage)
    with pytest.raises(SignatureError, match="public key not found"):
        verify_bundle(signed, tmp_path / "missing.pub")
    with pytest.raises(SignatureError, match="unreadable public key"):
        verify_bundle(signed, garbage)


def test_signing_refuses_to_sign_a_damaged_bundle(tmp_path, keys):
    bundle = make_bundle(tmp_path / "b")
    _flip(bundle / "model.onnx")
    with pytest.raises(BundleIntegrityError, match="does not match its checksum"):
        sign_bundle(bundle, keys["ours"][0])
    assert not (bundle / SIGNATURE_NAME).exists()


def test_signing_cli_sign_verify_inspect(tmp_path, keys):
    bundle = make_bundle(tmp_path / "b")
    runner = CliRunner()
    result = runner.invoke(main, ["sign", str(bundle), "--private-key", str(keys["ours"][0])])
    assert result.exit_code == 0, result.output
    assert "signed" in result.output and "key sha256:" in result.output
    result = runner.invoke(main, ["verify", str(bundle), "--public-key", str(keys["ours"][1])])
    assert result.exit_code == 0 and "verified" in result.output, result.output
    result = runner.invoke(main, ["inspect", str(bundle)])
    assert "signature  key sha256:" in result.output
    result = runner.invoke(main, ["verify", str(bundle), "--public-key", str(keys["other"][1])])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "another key" in result.output
    result = runner.invoke(main, ["run", str(bundle), "hello", "--public-key", str(keys["other"][1])])
    assert result.exit_code == 1 and "another key" in result.output


def test_signing_with_a_key_never_imports_the_sigstore_client(tmp_path, keys):
    """Key signatures need no Sigstore client (about half of a sign or verify process's time went to importing
    it: scripts/bench_signing.py); the keyless and certificate methods still load it when they are used."""
    import subprocess
    import sys

    bundle = make_bundle(tmp_path / "b")
    code = (
        "import sys\n"
        "from hfexport.runtime.signing import sign_bundle, verify_bundle\n"
        f"sign_bundle({str(bundle)!r}, {str(keys['ours'][0])!r})\n"
        f"assert verify_bundle({str(bundle)!r}, {str(keys['ours'][1])!r}).verified\n"
        "assert 'sigstore' not in sys.modules, sorted(m for m in sys.modules if m.startswith('sigstore'))\n"
        "assert 'numpy' not in sys.modules  # signing reads manifests and hashes files: no array code\n"
        "from model_signing._signing import sign_sigstore\n"
        "assert sign_sigstore.Signer and 'sigstore' in sys.modules  # loaded at its first use\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_signing_build_sign_with_signs_the_installed_bundle(tiny_model, fast_recipe, tmp_path, keys):
    from hfexport.api import build
    from hfexport.progress import Progress

    result = build(str(tiny_model("bert", "feature-extraction")), recipe=str(fast_recipe()),
                   output=tmp_path / "out", sign_with=keys["ours"][0], progress=Progress("quiet"))
    assert (result.bundle / SIGNATURE_NAME).is_file()
    assert verify_bundle(result.bundle, keys["ours"][1]).verified
    assert load(result.bundle, public_key=keys["ours"][1])(["hello"]).shape[0] == 1
    assert not list(tmp_path.glob(".out*")), "no signing leftovers beside the bundle"
    # The report (covered by the signature) names the signer the build signed as.
    signer = verify_bundle(result.bundle, keys["ours"][1]).signer
    assert result.report.signed_by == signer
    assert f"{signer} (hfexport verify" in (result.bundle / "report" / "report.html").read_text()
