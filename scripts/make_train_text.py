#!/usr/bin/env python
"""Write unlabelled English sentences for distillation from text already on this machine.

Nothing can be downloaded here, so the sentences come from prose every Python install carries: the
docstrings of the standard library and the long descriptions of installed packages. It is real,
human-written English (technical in tone), disjoint from hfexport's held-out evaluation corpus.

    python scripts/make_train_text.py --count 5000 --output train.txt
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pkgutil
import re
import sys
import warnings

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,;:.!?]?$")


def _prose(text: str):
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(line.strip() for line in paragraph.splitlines())
        for sentence in _SENTENCE.split(flat):
            words = sentence.split()
            # Plain sentences only: mostly words, no code, no markup, no tables.
            if 6 <= len(words) <= 60 and sentence[-1] in ".!?" and sentence[0].isupper() \
                    and sum(bool(_WORD.match(w)) for w in words) >= 0.85 * len(words):
                yield sentence


def _sources():
    for dist in importlib.metadata.distributions():
        yield dist.metadata.get_payload() or dist.metadata.get("Description") or ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in sorted(sys.stdlib_module_names):
            if module.startswith("_") or module in ("antigravity", "this", "idlelib", "tkinter", "turtle"):
                continue
            try:
                mod = importlib.import_module(module)
            except Exception:  # some stdlib modules need optional system libraries
                continue
            yield mod.__doc__ or ""
            for value in vars(mod).values():
                doc = getattr(value, "__doc__", None)
                if isinstance(doc, str) and getattr(value, "__module__", None) == module:
                    yield doc
            for sub in pkgutil.iter_modules(getattr(mod, "__path__", [])):
                if sub.name.startswith("_"):  # __main__ modules run a program when imported
                    continue
                try:
                    yield importlib.import_module(f"{module}.{sub.name}").__doc__ or ""
                except Exception:
                    continue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--output", default="train.txt")
    args = parser.parse_args()
    from hfexport.data import default_calibration_texts, default_eval_texts

    held_out = set(default_eval_texts()) | set(default_calibration_texts())
    sys.argv = sys.argv[:1]  # some modules read the command line when imported
    seen: set[str] = set()
    for text in _sources():
        for sentence in _prose(text):
            if sentence not in seen and sentence not in held_out:
                seen.add(sentence)
        if len(seen) >= args.count * 2:
            break
    # A deterministic, spread-out choice rather than the first N (which would come from one package).
    ordered = sorted(seen)
    step = max(1, len(ordered) // args.count)
    chosen = ordered[::step][: args.count]
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} sentences to {args.output} (from {len(seen)} candidates)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
