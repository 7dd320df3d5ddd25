"""Paths never leave a bundle: manifest names, symbolic links and ONNX external-data locations."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hfexport.errors import BundleIntegrityError
from hfexport.runtime import load
from hfexport.runtime.paths import external_data_locations
from tests.tiny_bundle import make_bundle, write_manifest


def _edit_manifest(bundle: Path, change) -> None:
    body = json.loads((bundle / "manifest.json").read_text())
    change(body)
    write_manifest(bundle, body, rehash=False)


def _set_location(model: Path, location: str) -> None:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model))


@pytest.mark.parametrize("field,name", [
    ("model_file", "../model.onnx"), ("model_file", "/etc/passwd"), ("model_file", "sub/../../x"),
    ("tokenizer", "../tokenizer.json"), ("tokenizer", "/tmp/tokenizer.json"), ("files", "../secret"),
    ("model_files", "C:\\Windows\\x"), ("model_file", ""), ("report", "../report.json"),
])
def test_paths_manifest_names_outside_the_bundle_refused(tmp_path, field, name):
    bundle = make_bundle(tmp_path / "b")

    def change(body):
        if field == "tokenizer":
            body["tokenizer"]["file"] = name
        elif field == "files":
            body["files"][name] = {"sha256": "0" * 64, "bytes": 1}
        elif field == "model_files":
            body["model_files"].append(name)
        elif field == "report":
            body["validation"] = {"passed": True, "summary": {}, "gates": [], "report": name}
        else:
            body[field] = name

    _edit_manifest(bundle, change)
    for verify in (True, False):
        with pytest.raises(BundleIntegrityError, match="outside the bundle|not a file name"):
            load(bundle, verify=verify)


def test_paths_symlinked_file_refused_even_when_checksums_match(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    outside = tmp_path / "outside.json"
    shutil.move(bundle / "tokenizer" / "tokenizer.json", outside)
    os.symlink(outside, bundle / "tokenizer" / "tokenizer.json")
    write_manifest(bundle)  # the table follows the link: checksums alone would pass
    with pytest.raises(BundleIntegrityError, match="symbolic link"):
        load(bundle)


def test_paths_symlinked_folder_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    shutil.move(bundle / "tokenizer", tmp_path / "tok")
    os.symlink(tmp_path / "tok", bundle / "tokenizer")
    with pytest.raises(BundleIntegrityError, match="symbolic link"):
        load(bundle, verify=False)


def test_paths_dangling_link_anywhere_in_the_bundle_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    os.symlink("/etc/passwd", bundle / "notes.txt")
    with pytest.raises(BundleIntegrityError, match="notes.txt is a symbolic link"):
        load(bundle)


def test_paths_external_data_inside_loads(tmp_path):
    bundle = make_bundle(tmp_path / "b", external="weights.bin")
    assert external_data_locations(bundle / "model.onnx") == ["weights.bin"]
    assert load(bundle)(["hello"]).shape == (1, 8)


@pytest.mark.parametrize("location", ["../weights.bin", "/tmp/weights.bin", "sub/../../weights.bin"])
def test_paths_external_data_outside_refused_before_a_session_opens(tmp_path, location):
    bundle = make_bundle(tmp_path / "b", external="weights.bin")
    shutil.copy(bundle / "weights.bin", tmp_path / "weights.bin")  # a real file there: ORT would read it
    _set_location(bundle / "model.onnx", location)
    write_manifest(bundle)
    with pytest.raises(BundleIntegrityError, match="external data .* points outside the bundle"):
        load(bundle)


def test_paths_external_data_through_a_link_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b", external="weights.bin")
    shutil.move(bundle / "weights.bin", tmp_path / "weights.bin")
    os.symlink(tmp_path / "weights.bin", bundle / "weights.bin")
    with pytest.raises(BundleIntegrityError, match="symbolic link"):
        load(bundle, verify=False)
    from hfexport.runtime.paths import check_external_data

    with pytest.raises(BundleIntegrityError, match="symbolic link"):
        check_external_data(bundle / "model.onnx")


def test_paths_missing_external_data_named(tmp_path):
    bundle = make_bundle(tmp_path / "b", external="weights.bin")
    _set_location(bundle / "model.onnx", "other.bin")
    write_manifest(bundle)
    with pytest.raises(BundleIntegrityError, match="external data 'other.bin' is missing"):
        load(bundle)


def test_paths_truncated_model_is_a_bundle_error(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])
    write_manifest(bundle)
    with pytest.raises(BundleIntegrityError, match="model.onnx"):
        load(bundle)
