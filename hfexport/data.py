"""Calibration and evaluation text: the shipped corpus, or a user's file (txt, jsonl, csv, parquet)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hfexport.errors import DataError

_CORPUS = Path(__file__).parent / "data" / "texts_en.txt"
# The first lines calibrate; the rest are held out for evaluation. The two sets never overlap.
CALIBRATION_LINES = 160
_TEXT_COLUMNS = ("text", "sentence", "content", "question", "prompt")


def _corpus() -> list[str]:
    return [line for line in _CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def default_calibration_texts() -> list[str]:
    return _corpus()[:CALIBRATION_LINES]


def default_eval_texts() -> list[str]:
    return _corpus()[CALIBRATION_LINES:]


def _pick_column(columns, wanted: str | None, source: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise DataError(f"{source}: no column {wanted!r} (has: {', '.join(columns)})")
        return wanted
    for name in _TEXT_COLUMNS:
        if name in columns:
            return name
    raise DataError(f"{source}: no text column found (has: {', '.join(columns)}); name one with --text-column")


def read_texts(path: str | Path, *, text_column: str | None = None, limit: int | None = None) -> list[str]:
    """Texts from a file: .txt (one per line), or a column of .jsonl, .csv/.tsv, .parquet or a datasets folder."""
    source = Path(path).expanduser()
    if source.is_dir() or source.suffix.lower() in _STRUCTURED:
        rows = read_records(source)
        column = _pick_column(list(rows[0]), text_column, source)
        texts = [str(row.get(column) or "") for row in rows]
    else:
        if not source.is_file():
            raise DataError(f"data file not found: {path}")
        try:
            texts = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise DataError(f"cannot read {source}: {exc.strerror}") from exc
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise DataError(f"{source}: contains no text")
    return texts[:limit] if limit else texts


# -- labelled evaluation data ------------------------------------------------------------------------

_STRUCTURED = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
_PAIR_COLUMNS = (("sentence1", "sentence2"), ("text_a", "text_b"), ("premise", "hypothesis"))
_LABEL_COLUMNS = ("label", "labels", "score", "answer", "answers")


def read_records(path: str | Path) -> list[dict]:
    """Rows of a labelled file: .jsonl, .csv/.tsv, .parquet, or a local `datasets` folder (save_to_disk)."""
    source = Path(path).expanduser()
    if source.is_dir():
        try:
            import datasets
        except ImportError as exc:
            raise DataError(f"{source}: reading a datasets folder needs the datasets package") from exc
        try:
            loaded = datasets.load_from_disk(str(source))
        except Exception as exc:  # datasets raises FileNotFoundError or its own errors
            raise DataError(f"{source}: not a datasets folder saved with save_to_disk ({exc})") from exc
        if isinstance(loaded, datasets.DatasetDict):
            split = "test" if "test" in loaded else "validation" if "validation" in loaded else next(iter(loaded))
            loaded = loaded[split]
        return [dict(row) for row in loaded]
    if not source.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = source.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif suffix in (".csv", ".tsv"):
            with open(source, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise DataError(f"{source}: reading parquet needs pyarrow (pip install pyarrow)") from exc
            rows = pq.read_table(source).to_pylist()
        else:
            return [{"text": t} for t in read_texts(source)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: invalid JSON on a line ({exc.msg})") from exc
    except csv.Error as exc:
        raise DataError(f"{source}: invalid CSV ({exc})") from exc
    except OSError as exc:
        raise DataError(f"cannot read {source}: {exc.strerror}") from exc
    if not rows:
        raise DataError(f"{source}: contains no text")
    if not isinstance(rows[0], dict):
        raise DataError(f"{source}: no rows (or rows that are not objects)")
    return rows


def label_column_of(rows: list[dict], label_column: str | None, source: str) -> str | None:
    """The column holding labels: the one asked for (which must exist), or a usual name, or None."""
    columns = list(rows[0])
    if label_column and label_column not in columns:
        raise DataError(f"{source}: no column {label_column!r} (has: {', '.join(columns)})")
    return label_column or next((c for c in _LABEL_COLUMNS if c in columns), None)


def text_examples(rows: list[dict], *, text_column: str | None = None, label_column: str | None = None,
                  source: str = "data") -> tuple[list, list]:
    """(inputs, labels): texts or text pairs (sentence1/sentence2, ...), and their labels; [] when none."""
    label = label_column_of(rows, label_column, source)
    columns = list(rows[0])
    pair = next((p for p in _PAIR_COLUMNS if p[0] in columns and p[1] in columns), None)
    if pair and not text_column:
        inputs = [(str(r[pair[0]]), str(r[pair[1]])) for r in rows]
    else:
        column = _pick_column(columns, text_column, Path(source))
        inputs = [str(r[column]) for r in rows]
    return inputs, [r[label] for r in rows] if label else []


def word_labelled_examples(rows, words_column, label_column, source) -> tuple[list, list]:
    """CoNLL-style rows (a list of words and a list of tags): the words joined by spaces, and per text
    the character span of every word with its tag, so predictions can be matched word by word."""
    label_column_of(rows, label_column, source)
    columns = list(rows[0])
    label = label_column or next((c for c in ("ner_tags", "tags", "labels", "label") if c in columns), None)
    inputs, labels = [], []
    for row in rows:
        words = [str(word) for word in row[words_column]]
        spans, position = [], 0
        for word in words:
            spans.append((position, position + len(word)))
            position += len(word) + 1
        inputs.append(" ".join(words))
        if label:
            tags = list(row[label])
            if len(tags) != len(words):
                raise DataError(f"{source}: a row has {len(words)} words but {len(tags)} tags")
            labels.append({"spans": spans, "tags": tags})
    return inputs, labels


def token_windows(tokenizer, texts: list[str], count: int, length: int) -> list[list[int]]:
    """`count` prompts of exactly `length` tokens cut from the text (with the tokenizer's own prefix, e.g. BOS)."""
    prefix = tokenizer("")["input_ids"]
    body = length - len(prefix)
    ids: list[int] = tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
    while len(ids) < count * body:
        ids = ids + ids
    return [prefix + ids[i * body:(i + 1) * body] for i in range(count)]


def split_held_out(texts: list[str], wanted: int, minimum: int = 8) -> tuple[list[str], list[str]]:
    """(held out, rest): up to `wanted` texts, at most a fifth, picked with a fixed seed; ([], texts) when
    fewer than `minimum` can be spared."""
    import random

    count = min(wanted, len(texts) // 5)
    if count < minimum:
        return [], list(texts)
    chosen = set(random.Random(0).sample(range(len(texts)), count))
    return ([t for i, t in enumerate(texts) if i in chosen], [t for i, t in enumerate(texts) if i not in chosen])
