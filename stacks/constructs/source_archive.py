"""Script-mode source code as a deterministic `sourcedir.tar.gz` file asset.

SageMaker script mode downloads `sagemaker_submit_directory` (an S3 tar.gz) and runs
`sagemaker_program` from it. The archive is built at synth from a folder of the repository:
entries sorted by path, every entry with mtime 0, uid/gid 0, empty owner names and mode 0644,
no bytecode or hidden files. The gzip layer is written here with *stored* (uncompressed) deflate
blocks, a fixed header (no file name, mtime 0) and zlib's CRC-32: compressed deflate output depends
on the zlib build (zlib-ng, which some distributions now ship as zlib, emits different bytes), a
stored block does not. The same sources therefore give the same bytes, hence the same asset hash
and the same S3 key, on every machine and every run: an unchanged training script never shows up
in `cdk diff`. The code is a few hundred KB at most, so not compressing costs nothing that matters.

Line endings are part of the content: a checkout that rewrites them (core.autocrlf) changes the
hash, as it would change any other asset.
"""

from __future__ import annotations

import fnmatch
import io
import os
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Iterable, Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = PROJECT_ROOT / "build" / "source-archives"  # git-ignored (/build/)
ARCHIVE_NAME = "sourcedir.tar.gz"
ALWAYS_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", ".*")
FILE_MODE = 0o644


def archive_members(source_dir: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Files to pack, as paths relative to `source_dir`, sorted; a pattern matches any path part."""
    patterns = tuple(ALWAYS_EXCLUDED) + tuple(exclude)
    members = []
    for root, dirs, files in os.walk(source_dir):
        rel_root = Path(root).relative_to(source_dir)
        dirs[:] = [d for d in dirs if not _excluded(rel_root / d, patterns)]
        members.extend(rel_root / f for f in files if not _excluded(rel_root / f, patterns))
    return sorted(members, key=lambda p: p.as_posix())


def _excluded(relative: Path, patterns: Iterable[str]) -> bool:
    posix = relative.as_posix()
    return any(fnmatch.fnmatchcase(part, pattern) or fnmatch.fnmatchcase(posix, pattern) for pattern in patterns for part in relative.parts)


def archive_bytes(source_dir: Path, exclude: Sequence[str] = ()) -> bytes:
    """The deterministic tar.gz of `source_dir` (see the module docstring for what is fixed)."""
    source_dir = Path(source_dir)
    members = archive_members(source_dir, exclude)
    if not members:
        raise ValueError(f"source archive: no files to pack in {source_dir}")
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for relative in members:
            data = (source_dir / relative).read_bytes()
            info = tarfile.TarInfo(name=relative.as_posix())
            info.size = len(data)
            info.mtime = 0
            info.mode = FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return gzip_stored(tar_buffer.getvalue())


def gzip_stored(data: bytes) -> bytes:
    """A gzip member (RFC 1952) whose deflate stream (RFC 1951) holds only stored blocks."""
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff"  # no flags, mtime 0, OS unknown
    blocks = []
    chunks = [data[i : i + 0xFFFF] for i in range(0, len(data), 0xFFFF)] or [b""]
    for index, chunk in enumerate(chunks):
        final = 1 if index == len(chunks) - 1 else 0
        blocks.append(struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + b"".join(blocks) + trailer


def build_archive(source_dir: Path, output: Path, exclude: Sequence[str] = ()) -> Path:
    """Writes the archive to `output` atomically (parallel synths may share the build folder)."""
    content = archive_bytes(source_dir, exclude)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_file() and output.read_bytes() == content:
        return output
    with tempfile.NamedTemporaryFile(dir=output.parent, prefix=".tmp-", delete=False) as handle:
        handle.write(content)
    os.replace(handle.name, output)
    return output


class SourceArchive(Construct):
    """`sourcedir.tar.gz` of `source_dir`, uploaded as a file asset.

    Attributes: `asset` (s3_assets.Asset), `s3_url` (s3://bucket/key, for
    `sagemaker_submit_directory`), `path` (the local archive).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source_dir: Path,
        exclude: Sequence[str] = (),
        build_dir: Path | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        source_dir = Path(source_dir).resolve()
        if build_dir is None:
            name = source_dir.relative_to(PROJECT_ROOT).as_posix() if source_dir.is_relative_to(PROJECT_ROOT) else source_dir.name
            build_dir = BUILD_ROOT / name.replace("/", "-")
        folder = Path(build_dir)
        self.path = build_archive(source_dir, folder / ARCHIVE_NAME, exclude)
        self.asset = s3_assets.Asset(self, "Asset", path=str(self.path))
        self.s3_url = self.asset.s3_object_url

    def grant_read(self, grantee: iam.IGrantable) -> None:
        self.asset.grant_read(grantee)
