#!/usr/bin/env python
"""Time `hfexport sign` and `hfexport verify` on a bundle, each a fresh process, as a release pipeline and an
app's start-up run them.

    python scripts/bench_signing.py                      # builds the default bundle first (--validation quick)
    python scripts/bench_signing.py --bundle hfexport-bundle --runs 5

A throwaway P-256 key pair is made for the run. Prints the median and range of sign, verify and their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="an existing bundle [default: build one]")
    parser.add_argument("--runs", type=int, default=5)
    return parser.parse_args()


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


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    args = _parse()
    script = Path(sys.executable).with_name("hfexport")  # the console script users run, when installed
    hfexport = [str(script)] if script.is_file() else [sys.executable, "-m", "hfexport.cli"]
    with tempfile.TemporaryDirectory(prefix="bench-signing-") as temp:
        temp = Path(temp)
        bundle = temp / "bundle"
        if args.bundle:
            shutil.copytree(args.bundle, bundle, ignore=shutil.ignore_patterns("model.sig"))
        else:
            subprocess.run([*hfexport, "build", "--validation", "quick", "--quiet", "--output", str(bundle)],
                           check=True)
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        private, public = _key_pair(temp)
        print(f"load average before: {os.getloadavg()[0]:.2f}; bundle {size / 1e6:.1f} MB", file=sys.stderr)
        runs = []
        for _ in range(args.runs):
            sign = _timed([*hfexport, "sign", str(bundle), "--private-key", str(private)])
            verify = _timed([*hfexport, "verify", str(bundle), "--public-key", str(public)])
            runs.append({"sign": sign, "verify": verify, "total": sign + verify})
    summary = {name: {"median": round(statistics.median(r[name] for r in runs), 2),
                      "min": round(min(r[name] for r in runs), 2), "max": round(max(r[name] for r in runs), 2)}
               for name in ("sign", "verify", "total")}
    print(json.dumps({"bundle_mb": round(size / 1e6, 1), "load_after": round(os.getloadavg()[0], 2), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
