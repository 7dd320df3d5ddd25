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


# -- images (image-classification, image-feature-extraction) -------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SYNTHETIC = "synthetic:"  # a reference to the n-th generated image, as calibration and evaluation name it
# The first generated images calibrate; those from here on are held out for evaluation.
_SYNTHETIC_EVAL_START = 1000


def synthetic_image(index: int, size: tuple[int, int] | None = None):
    """A deterministic HxWx3 uint8 test image: a colour gradient, a few shapes and noise, seeded by `index`.

    Sizes vary with the index (48-95 px a side, portrait and landscape), so resizing and cropping are exercised."""
    import numpy as np

    rng = np.random.default_rng(index)
    height, width = size or (int(rng.integers(48, 96)), int(rng.integers(48, 96)))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, np.pi)
    t = ((x / width) * np.cos(angle) + (y / height) * np.sin(angle)).clip(0, 1)[..., None]
    image = start * (1 - t) + end * t
    for _ in range(int(rng.integers(1, 4))):
        colour = rng.uniform(0, 255, 3)
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, min(height, width) / 2)
        if rng.random() < 0.5:
            inside = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
        else:
            inside = (abs(y - cy) < r) & (abs(x - cx) < r * rng.uniform(0.5, 1.5))
        image[inside] = colour
    image += rng.normal(0, rng.uniform(2, 20), image.shape)
    return image.clip(0, 255).astype(np.uint8)


def default_calibration_images(count: int = 64) -> list[str]:
    return [f"{SYNTHETIC}{i}" for i in range(count)]


def default_eval_images(count: int) -> list:
    return [synthetic_image(_SYNTHETIC_EVAL_START + i) for i in range(count)]


def load_image(reference):
    """A calibration or evaluation image by reference: "synthetic:<n>", a file path, or the array itself."""
    if isinstance(reference, str) and reference.startswith(SYNTHETIC):
        return synthetic_image(int(reference[len(SYNTHETIC):]))
    if isinstance(reference, (str, Path)):
        from hfexport.runtime.image import to_rgb_array

        try:
            return to_rgb_array(str(reference))
        except ValueError as exc:
            raise DataError(str(exc).removeprefix("image 0: ")) from None
    return reference


def image_files(path: str | Path) -> list[Path]:
    """Every image file under a folder (sorted, subfolders included); DataError naming the folder otherwise."""
    kinds = ", ".join(IMAGE_SUFFIXES)
    files = _files_under(path, IMAGE_SUFFIXES, f"image data should be a folder of image files ({kinds})",
                         f"no image files ({kinds})")
    for file in files:
        load_image(file)  # one unreadable file fails here, naming it, not in the middle of a pass
    return files


def read_image_refs(path: str | Path) -> list[str]:
    """--calibration-data for an image task: the folder's image files, as references."""
    return [str(p) for p in image_files(path)]


def read_image_records(path: str | Path) -> list[dict]:
    """--eval-data for an image task: one row per image file; its label is the name of its subfolder
    (the usual `folder/<label>/<image>` layout), or none for images at the top of the folder."""
    folder = Path(path).expanduser()
    rows = []
    for file in image_files(folder):
        parent = file.parent.relative_to(folder)
        rows.append({"image": str(file), **({"label": parent.parts[0]} if parent.parts else {})})
    return rows


def image_examples(rows: list[dict], *, source: str = "data") -> tuple[list, list]:
    """(images, labels) from read_image_records' rows; labels empty unless every image has one."""
    images = [load_image(row["image"]) for row in rows if "image" in row]
    if len(images) != len(rows):
        raise DataError(f"{source}: image tasks take a folder of image files as --eval-data")
    labels = [row["label"] for row in rows] if all("label" in row for row in rows) else []
    return images, labels


# -- audio --------------------------------------------------------------------------------------------

AUDIO_SUFFIXES = (".wav",)


def synthetic_audio(index: int, sampling_rate: int = 16000):
    """A deterministic clip of 0.2-0.6 s: tones, a chirp, a noise burst and silence mixed by `index`, float32 in
    [-1, 1] (for calibration and the held-out check: the input distribution, not speech)."""
    import numpy as np

    rng = np.random.default_rng(10_000 + index)
    seconds = 0.2 + 0.4 * rng.random()
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    f0, f1 = 80 + 400 * rng.random(), 200 + 3000 * rng.random()
    clip = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * (f0 + (f1 - f0) * t / seconds / 2) * t)
    clip += 0.1 * np.sin(2 * np.pi * (2 + index % 7) * f0 * t)
    start, width = rng.integers(0, len(t) // 2), len(t) // 4
    clip[start:start + width] += 0.3 * rng.standard_normal(min(width, len(t) - start))
    clip *= 0.5 + 0.5 * np.sin(np.pi * t / seconds) ** 2  # an envelope, like syllables
    if index % 5 == 0:
        clip[-len(t) // 5:] = 0.0  # trailing silence
    return np.clip(clip, -1, 1).astype(np.float32)


SYNTHETIC_AUDIO = "synthetic-audio:"


def default_calibration_audio(count: int = 32) -> list[str]:
    return [f"{SYNTHETIC_AUDIO}{i}" for i in range(count)]


def load_audio(reference, sampling_rate: int = 16000):
    """A calibration or evaluation clip by reference: "synthetic-audio:<n>", a .wav path, or the array itself."""
    if isinstance(reference, str) and reference.startswith(SYNTHETIC_AUDIO):
        return synthetic_audio(int(reference[len(SYNTHETIC_AUDIO):]), sampling_rate)
    if isinstance(reference, (str, Path)):
        from hfexport.runtime.audio import read_wav

        try:
            return read_wav(reference, sampling_rate)
        except ValueError as exc:
            raise DataError(str(exc).removeprefix("audio 0: ")) from None
    return reference


def default_eval_audio(count: int) -> list:
    return [synthetic_audio(1000 + index) for index in range(count)]  # held out of calibration


def audio_files(path: str | Path) -> list[Path]:
    """Every .wav file in a folder (recursively), sorted."""
    return _files_under(path, AUDIO_SUFFIXES, "audio data should be a folder of .wav files (16-bit PCM mono)",
                        "no .wav files")


def _files_under(path: str | Path, suffixes, wanted: str, none: str) -> list[Path]:
    """The files with one of `suffixes` under a folder (sorted, subfolders included); DataError saying what was
    wanted when `path` is not a folder, or `none` when it holds no such file."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{wanted}: {path}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DataError(f"{folder}: {none} in the folder or below it")
    return files


def read_audio_records(path: str | Path) -> list[dict]:
    """--eval-data for speech recognition: one row per .wav file; its transcript (the label) is the text of a
    .txt file of the same name beside it, when there is one."""
    rows = []
    for file in audio_files(path):
        transcript = file.with_suffix(".txt")
        label = {"label": transcript.read_text(encoding="utf-8").strip()} if transcript.is_file() else {}
        rows.append({"audio": str(file), **label})
    return rows
