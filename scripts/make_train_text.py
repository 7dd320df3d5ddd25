#!/usr/bin/env python
"""Write unlabelled English sentences for distillation from text already on this machine.

Nothing can be downloaded from a model hub here, so the sentences come from human-written prose that
installs carry, general English in equal shares from each source present:
- news: the Lee corpus of ABC news articles in gensim's test data (`pip install gensim`);
- everyday: WordNet's usage examples (`apt-get install wordnet-base`): "we kayaked down the river";
- quotations: Debian's `fortunes` (`apt-get install fortunes`): sayings, literature;
- dialog: questions, replies and support chat from the chatterbot corpus (`pip install chatterbot-corpus`);
then, to fill up, the docstrings of Python's standard library and installed packages' descriptions
(technical English). None of it overlaps hfexport's calibration or held-out evaluation corpus.

NOTE: the domain matters more than the amount. Distilling a pruned all-MiniLM-L6-v2 on docstrings
alone reached mean cosine 0.70 on the everyday-English held-out corpus, on fortunes alone 0.83; at 250
steps, fortunes alone 0.794 and the three-source mix 0.808.

    pip install -e ".[train-text]"   # gensim and chatterbot-corpus
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


def _prose(text: str, min_words: int = 6):
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(line.strip() for line in paragraph.splitlines())
        for sentence in _SENTENCE.split(flat):
            words = sentence.split()
            # Plain sentences only: mostly words, no code, no markup, no tables.
            if min_words <= len(words) <= 60 and sentence[-1] in ".!?" and sentence[0].isupper() \
                    and sum(bool(_WORD.match(w)) for w in words) >= 0.85 * len(words):
                yield sentence


_FORTUNES = Path("/usr/share/games/fortunes")
# Categories that are mostly ASCII art, or stereotypes we would rather not train on.
_SKIP_FORTUNES = {"art", "ascii-art", "ethnic", "men-women", "drugs", "debian", "linux", "computers"}
_WORDNET = Path("/usr/share/wordnet")


def _quotations():
    """Debian `fortunes`: quotations, sayings, literature."""
    if _FORTUNES.is_dir():
        for path in sorted(_FORTUNES.iterdir()):
            if path.suffix or path.name in _SKIP_FORTUNES or not path.is_file():
                continue
            for item in path.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
                # Attribution lines ("-- Mark Twain") are not part of the sentence.
                yield "\n".join(line for line in item.splitlines() if not line.strip().startswith("--"))


def _everyday():
    """WordNet's usage examples (Debian `wordnet-base`): short everyday sentences ("we kayaked down the river")."""
    for part in ("noun", "verb", "adj", "adv"):
        path = _WORDNET / f"data.{part}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            gloss = line.partition(" | ")[2]
            for example in re.findall(r'"([^"]+)"', gloss):
                example = example.strip()
                if example and example[-1] not in ".!?":
                    example += "."
                # Written lower-case in WordNet; the sentence filter wants a capital.
                yield example[:1].upper() + example[1:]


def _package_folder(name: str) -> Path | None:
    """Where an installed package's files are (its data ships inside), or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _news():
    """News articles that ship with gensim's tests (the Lee corpus, ABC news): `pip install gensim`."""
    package = _package_folder("gensim")
    if package is None:
        return
    folder = package / "test" / "test_data"
    for name in ("lee_background.cor", "lee.cor"):
        if (folder / name).is_file():
            yield from (folder / name).read_text(encoding="utf-8", errors="ignore").splitlines()


_QUESTION = re.compile(r"^(what|who|whom|whose|where|when|why|how|which|is|are|am|do|does|did|can|could|will|"
                       r"would|should|shall|have|has|may)\b", re.I)


def _dialog():
    """Conversation lines (questions, replies, support chat) from the chatterbot corpus:
    `pip install chatterbot-corpus` (BSD). Lines are YAML list items: "- - question" / "  - answer"."""
    package = _package_folder("chatterbot_corpus")
    if package is None:
        return
    for path in sorted((package / "data" / "english").glob("*.yml")):
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            item = line.strip()
            text = item.lstrip("- ").strip().strip("'\"")
            if not item.startswith("- ") or not text or text.endswith(":"):
                continue
            if text[-1] not in ".!?":
                text += "?" if _QUESTION.match(text) else "."
            yield text[:1].upper() + text[1:]


def _general_sources():
    return (("news", _news()), ("everyday", _everyday()), ("quotations", _quotations()), ("dialog", _dialog()))


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


def _sentences(texts, held_out: set[str], min_words: int = 6) -> set[str]:
    """The plain sentences in `texts`, minus hfexport's own calibration and evaluation text."""
    return {s for text in texts for s in _prose(text, min_words) if s not in held_out}


def _spread(items: list[str], count: int) -> list[str]:
    """A deterministic, spread-out choice rather than the first N (which would come from one corner)."""
    step = max(1, len(items) // max(count, 1))
    return items[::step][:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--output", default="train.txt")
    args = parser.parse_args()
    from hfexport.data import default_calibration_texts, default_eval_texts

    held_out = set(default_eval_texts()) | set(default_calibration_texts())
    sys.argv = sys.argv[:1]  # some modules read the command line when imported
    chosen: list[str] = []
    # General English first, in equal shares from each source that is installed (a source with fewer
    # sentences than its share gives all it has, and the rest is shared out); technical text fills up.
    general = {}
    for name, texts in _general_sources():
        # Conversation is short ("How are you?"): shorter sentences count there, six words elsewhere.
        found = _sentences(texts, held_out, 3 if name == "dialog" else 6)
        if found:
            general[name] = sorted(found)
    for position, name in enumerate(sorted(general, key=lambda n: len(general[n]))):
        share = (args.count - len(chosen)) // (len(general) - position)
        chosen.extend(_spread(general[name], share))
        print(f"{name}: {min(share, len(general[name]))} sentences (from {len(general[name])})", file=sys.stderr)
    if len(chosen) < args.count:
        found = _sentences(_technical_sources(), held_out)
        picked = _spread(sorted(found - set(chosen)), args.count - len(chosen))
        chosen.extend(picked)
        print(f"technical: {len(picked)} sentences (from {len(found)})", file=sys.stderr)
    random.Random(0).shuffle(chosen)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} sentences to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
