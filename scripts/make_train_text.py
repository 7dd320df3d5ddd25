#!/usr/bin/env python
"""Write unlabelled English sentences for distillation from text already on this machine.

Nothing can be downloaded from a model hub here, so the sentences come from human-written prose that
installs carry: general English from Debian's `fortunes` package when it is installed
(`apt-get install fortunes`: quotations, sayings, literature), then the docstrings of Python's standard
library and the descriptions of installed packages (technical English). None of it overlaps
hfexport's calibration or held-out evaluation corpus.

NOTE: the domain matters more than the amount. Distilling a pruned all-MiniLM-L6-v2 on docstrings
alone reached mean cosine 0.70 on the everyday-English held-out corpus; general text is what carries.

    python scripts/make_train_text.py --count 5000 --output train.txt
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pkgutil
import random
import re
import sys
import warnings
from pathlib import Path

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


_FORTUNES = Path("/usr/share/games/fortunes")
# Categories that are mostly ASCII art, or stereotypes we would rather not train on.
_SKIP_FORTUNES = {"art", "ascii-art", "ethnic", "men-women", "drugs", "debian", "linux", "computers"}


def _general_sources():
    if _FORTUNES.is_dir():
        for path in sorted(_FORTUNES.iterdir()):
            if path.suffix or path.name in _SKIP_FORTUNES or not path.is_file():
                continue
            for item in path.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
                # Attribution lines ("-- Mark Twain") are not part of the sentence.
                yield "\n".join(line for line in item.splitlines() if not line.strip().startswith("--"))


def _technical_sources():
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
    chosen: list[str] = []
    for name, sources in (("general", _general_sources()), ("technical", _technical_sources())):
        found: set[str] = set()
        for text in sources:
            found.update(s for s in _prose(text) if s not in held_out)
        # A deterministic, spread-out choice rather than the first N (which would come from one source).
        ordered = sorted(found - set(chosen))
        wanted = args.count - len(chosen)
        step = max(1, len(ordered) // max(wanted, 1))
        picked = ordered[::step][:wanted]
        chosen.extend(picked)
        print(f"{name}: {len(picked)} sentences (from {len(found)})", file=sys.stderr)
        if len(chosen) >= args.count:
            break
    random.Random(0).shuffle(chosen)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} sentences to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
