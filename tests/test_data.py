"""Calibration and evaluation text in each supported file format."""

from __future__ import annotations

import json

import pytest

from hfexport.data import default_calibration_texts, default_eval_texts, read_texts
from hfexport.errors import DataError


def test_shipped_corpus_splits_without_overlap():
    calibration, evaluation = default_calibration_texts(), default_eval_texts()
    assert len(calibration) == 160 and len(evaluation) >= 256
    assert not set(calibration) & set(evaluation)


def test_read_texts_txt_skips_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one\n\n  two  \n")
    assert read_texts(path) == ["one", "two"]


def test_read_texts_jsonl_picks_text_column(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "text": f"t{i}"}) for i in range(3)))
    assert read_texts(path) == ["t0", "t1", "t2"]


def test_read_texts_csv_named_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("body,label\nhello,1\nworld,0\n")
    assert read_texts(path, text_column="body") == ["hello", "world"]
    with pytest.raises(DataError, match="no text column found"):
        read_texts(path)


def test_read_texts_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"sentence": ["a b", "c d"]}), path)
    assert read_texts(path) == ["a b", "c d"]


@pytest.mark.parametrize(("content", "message"), [(b"", "contains no text"), (b"\xff\xfe\xfa", "not UTF-8"),
                                                  (b"{not json", "invalid JSON")])
def test_read_texts_bad_files(tmp_path, content, message):
    path = tmp_path / ("bad.jsonl" if b"{" in content else "bad.txt")
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_texts(path)
