"""Signed bundles: the OpenSSF `model-signing` library signs manifest.json and every file of a bundle.

The signature is `model.sig` inside the bundle (model-signing's own default name, so its CLI verifies a
bundle as it is: `model_signing verify key BUNDLE --signature BUNDLE/model.sig --public_key key.pub`).
It is a Sigstore bundle whose DSSE payload lists the sha256 of every file in the folder; signing with an
elliptic-curve key (P-256/384/521) works offline. The manifest's own checksum table proves a file was not
corrupted; the signature proves nobody rewrote files and table together. Verification re-hashes every
file and refuses extra, missing or changed ones, a signature made with another key, or no signature.

model-signing is imported only when a bundle is signed or a key is given (`pip install 'hfexport[sign]'`):
loading without a key stays checksums-only and needs nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hfexport.errors import HfExportError, SignatureError, first_line

SIGNATURE_NAME = "model.sig"
_INSTALL = "pip install 'hfexport[sign]'"
_MAKE_KEY = ("make a key pair with: openssl ecparam -name prime256v1 -genkey -noout -out key.pem && "
             "openssl ec -in key.pem -pubout -out key.pub")


@dataclass(frozen=True)
class SignatureInfo:
    """Who signed a bundle, as its signature file says (checked only when `verified`)."""

    path: Path
    method: str  # "key", "certificate" or "sigstore"
    signer: str  # "key sha256:<first 16 hex digits>", a certificate subject, or "sigstore"
    verified: bool = False

    def describe(self) -> str:
        return f"{self.signer} ({'verified' if self.verified else 'not verified: pass --public-key'})"


# model-signing imports every signing method when any part of it is imported; the Sigstore (keyless) and
# certificate methods bring the sigstore client, about 0.6 s of each `hfexport sign`/`verify` process's 1.3 s.
# Key signatures never use them, so they load when first touched instead (importlib.util.LazyLoader).
_LAZY_MODULES = ("model_signing._signing.sign_sigstore", "model_signing._signing.sign_certificate")


class _LazyFinder:
    """A meta-path finder that hands out the modules above with their execution deferred to first use."""

    @staticmethod
    def find_spec(name, path=None, target=None):  # imports nothing itself: it runs inside the import system
        if name not in _LAZY_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _library():
    import sys

    finder = _LazyFinder()
    sys.meta_path.insert(0, finder)
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as exc:
        raise HfExportError(f"signed bundles need the model-signing library: {_INSTALL} ({exc})") from None
    finally:
        sys.meta_path.remove(finder)
    return hashing, signing, verifying


def _fingerprint(pem: bytes) -> str:
    """sha256 of the public key's PEM: the key hint model-signing writes into the signature."""
    return hashlib.sha256(pem).hexdigest()


def _short(fingerprint: str) -> str:
    return f"key sha256:{fingerprint[:16]}"


def _public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_curve(key, path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1"):
        raise SignatureError(f"{path}: model-signing signs with elliptic-curve keys (P-256, P-384, P-521); "
                             f"{_MAKE_KEY}")


def _read_private_key(path: Path, password: str | None):
    _library()  # the extra brings `cryptography`; say how to get both
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except FileNotFoundError:
        raise SignatureError(f"private key not found: {path}; {_MAKE_KEY}") from None
    except (OSError, ValueError, TypeError) as exc:
        hint = ("set HFEXPORT_KEY_PASSWORD to its password" if "password" in str(exc).lower()
                else "give a PEM private key")
        raise SignatureError(f"{path}: unreadable private key ({first_line(exc)}); {hint}") from None
    _check_curve(key.public_key(), path)
    return key


def _read_public_key(path: Path):
    _library()
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise SignatureError(f"public key not found: {path}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: unreadable public key ({first_line(exc)}); give the PEM "
                             "public key of the signing key (openssl ec -in key.pem -pubout -out key.pub)") from None
    _check_curve(key, path)
    return key


def check_private_key(private_key: str | Path) -> str:
    """Fail before a build starts when its --sign-with key cannot sign; the signer it will be named as."""
    key = _read_private_key(Path(private_key).expanduser(), os.environ.get("HFEXPORT_KEY_PASSWORD"))
    return _short(_fingerprint(_public_pem(key.public_key())))


def sign_bundle(path: str | Path, private_key: str | Path, *, password: str | None = None) -> SignatureInfo:
    """Write BUNDLE/model.sig over every file of a bundle whose checksums and paths check out.

    `password` (else $HFEXPORT_KEY_PASSWORD) opens an encrypted key."""
    from hfexport.runtime.manifest import read_manifest, verify_files
    from hfexport.runtime.paths import check_bundle_paths

    bundle = Path(path).expanduser()
    key_path = Path(private_key).expanduser()
    key = _read_private_key(key_path, password or os.environ.get("HFEXPORT_KEY_PASSWORD"))
    manifest = read_manifest(bundle)
    check_bundle_paths(bundle, manifest)
    verify_files(bundle, manifest)  # never sign a bundle that is already damaged
    hashing, signing, _ = _library()
    config = signing.Config().set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME]))
    config.use_elliptic_key_signer(private_key=key_path, password=password or os.environ.get("HFEXPORT_KEY_PASSWORD"))
    # Written beside the bundle, then moved in: a signature is whole or absent, never half-written.
    handle, temp = tempfile.mkstemp(prefix=f".{bundle.name}.sig-", dir=bundle.resolve().parent)
    os.close(handle)
    try:
        config.sign(bundle, temp)
        os.replace(temp, bundle / SIGNATURE_NAME)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return SignatureInfo(bundle / SIGNATURE_NAME, "key", _short(_fingerprint(_public_pem(key.public_key()))), verified=True)


def signature_info(path: str | Path) -> SignatureInfo | None:
    """What the bundle's signature file claims (not verified), or None when the bundle is unsigned."""
    sig = Path(path).expanduser() / SIGNATURE_NAME
    if not sig.is_file():
        return None
    try:
        material = json.loads(sig.read_text(encoding="utf-8")).get("verificationMaterial") or {}
    except (OSError, ValueError, AttributeError):
        return SignatureInfo(sig, "unknown", "unreadable signature file")
    if not isinstance(material, dict):
        return SignatureInfo(sig, "unknown", "unreadable signature file")
    hint = (material.get("publicKey") or {}).get("hint") if isinstance(material.get("publicKey"), dict) else None
    if isinstance(hint, str) and hint:
        return SignatureInfo(sig, "key", _short(hint))
    chain = material.get("x509CertificateChain") or material.get("certificate")
    if chain:
        return SignatureInfo(sig, "certificate", _certificate_subject(chain))
    return SignatureInfo(sig, "unknown", "a signature that names no key")


def _certificate_subject(chain) -> str:
    try:
        from cryptography import x509

        raw = chain["certificates"][0]["rawBytes"] if "certificates" in chain else chain["rawBytes"]
        return "certificate " + x509.load_der_x509_certificate(base64.b64decode(raw)).subject.rfc4514_string()
    except Exception:  # noqa: BLE001 - only a label for inspect; verification is what refuses
        return "certificate (unreadable)"


def verify_bundle(path: str | Path, public_key: str | Path) -> SignatureInfo:
    """Check BUNDLE/model.sig against `public_key` and every file; SignatureError (one line) says which
    check failed: no signature, another key, an altered signature, or files changed after signing."""
    bundle = Path(path).expanduser()
    key_path = Path(public_key).expanduser()
    key = _read_public_key(key_path)
    fingerprint = _fingerprint(_public_pem(key))
    sig = bundle / SIGNATURE_NAME
    if not bundle.is_dir():
        raise SignatureError(f"bundle folder not found: {bundle}")
    if sig.is_symlink() or (sig.exists() and not sig.is_file()):
        raise SignatureError(f"{sig}: not a plain file; a bundle holds no links")
    if not sig.is_file():
        raise SignatureError(f"{bundle}: not signed (no {SIGNATURE_NAME}); sign it with "
                             f"'hfexport sign {bundle} --private-key KEY', or load it without a public key")
    claimed = signature_info(bundle)
    if claimed is None or claimed.method != "key":
        raise SignatureError(f"{sig}: not a key signature ({claimed.signer if claimed else 'unreadable'}); "
                             f"re-sign the bundle with 'hfexport sign'")
    if claimed.signer != _short(fingerprint):
        raise SignatureError(f"{bundle}: signed by another key ({claimed.signer}), not {key_path} "
                             f"({_short(fingerprint)})")
    _, _, verifying = _library()
    from cryptography.exceptions import InvalidSignature

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=key_path).verify(bundle, sig)
    except InvalidSignature:
        raise SignatureError(f"{sig}: the signature is not valid for {key_path} (the signature file was "
                             "altered)") from None
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Signature mismatch"):
            raise SignatureError(f"{bundle}: files changed after signing: {_mismatch(text)}") from None
        raise SignatureError(f"{sig}: unreadable signature ({text.splitlines()[0][:200]})") from None
    except Exception as exc:  # noqa: BLE001 - a hostile signature file can fail anywhere in the parsers
        first = first_line(exc, 200)
        raise SignatureError(f"{sig}: unreadable signature ({first})") from None
    return SignatureInfo(sig, "key", _short(fingerprint), verified=True)


def _mismatch(text: str) -> str:
    """model-signing's diff list, shortened to file names."""
    import re

    text = text.replace("\\'", "'")
    names = re.findall(r"Hash mismatch for '([^']+)'", text)
    extra = re.search(r"Extra files found in model '[^']*': ([^'\"\]]+)", text)
    missing = re.search(r"Missing files in model '[^']*': ([^'\"\]]+)", text)
    parts = ([f"changed {', '.join(names)}"] if names else []) + (
        [f"added {extra.group(1)}"] if extra else []) + ([f"removed {missing.group(1)}"] if missing else [])
    return "; ".join(parts) or text[:200]
