"""The script-mode tarball is byte-identical whatever the file times, owners, order and bytecode."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest

from stacks.constructs import source_archive

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "model_artifacts" / "training"


def members(archive: bytes) -> list[tarfile.TarInfo]:
    return tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))).getmembers()


def test_training_code_archive_is_byte_identical_across_two_builds(tmp_path):
    first = source_archive.build_archive(TRAINING, tmp_path / "a" / "sourcedir.tar.gz", exclude=["sample_data"])
    copy = tmp_path / "copy"
    shutil.copytree(TRAINING, copy)
    # Another checkout: other mtimes, other permissions, stray bytecode and editor files.
    for index, path in enumerate(sorted(copy.rglob("*"))):
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
        if path.is_file():
            path.chmod(0o600 if index % 2 else 0o755)
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (copy / ".train.py.swp").write_bytes(b"editor")
    second = source_archive.build_archive(copy, tmp_path / "b" / "sourcedir.tar.gz", exclude=["sample_data"])
    assert first.read_bytes() == second.read_bytes()


def test_entries_are_sorted_normalized_and_complete():
    entries = members(source_archive.archive_bytes(TRAINING, exclude=["sample_data"]))
    names = [m.name for m in entries]
    assert names == sorted(names)
    assert {"train.py", "data_format.py", "hyperparameters.json", "requirements.txt"} <= set(names)
    assert not [n for n in names if "sample_data" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in entries} == {(0, 0, 0, "", "", 0o644)}


def test_gzip_layer_is_stored_blocks_with_a_fixed_header():
    data = os.urandom(200_000)  # more than three stored blocks
    archive = source_archive.gzip_stored(data)
    assert archive[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(archive) == data
    assert zlib.decompress(archive, 31) == data
    assert source_archive.gzip_stored(b"") and gzip.decompress(source_archive.gzip_stored(b"")) == b""


def test_a_content_change_changes_the_bytes(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("print(1)\n")
    before = source_archive.archive_bytes(folder)
    (folder / "train.py").write_text("print(2)\n")
    assert source_archive.archive_bytes(folder) != before


def test_empty_source_folder_fails(tmp_path):
    with pytest.raises(ValueError, match="no files"):
        source_archive.archive_bytes(tmp_path)


def test_asset_hash_is_the_same_for_two_builds_in_different_folders(tmp_path):
    import aws_cdk as cdk

    hashes = []
    for name in ("one", "two"):
        stack = cdk.Stack(cdk.App(outdir=str(tmp_path / f"out-{name}")), "S")
        archive = source_archive.SourceArchive(stack, "Code", source_dir=TRAINING, exclude=["sample_data"], build_dir=tmp_path / name)
        hashes.append(archive.asset.asset_hash)
        assert archive.path.read_bytes() == source_archive.archive_bytes(TRAINING, exclude=["sample_data"])
    assert hashes[0] == hashes[1]
