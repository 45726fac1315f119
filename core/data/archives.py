"""Zip and tar archives read member by member, never extracted to disk, with the checks that make
an untrusted upload safe: no `..` or absolute member paths (zip-slip), no symlinks, hardlinks or
devices, and caps on member size, total size and compression ratio (decompression bombs)."""
from __future__ import annotations

import os
import stat
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from core.data.errors import DatasetUnavailable

ARCHIVE_FORMATS = ("zip", "tar", "tar.gz")


class UnsafeArchive(DatasetUnavailable):
    """The archive is refused as a whole (path traversal, links, bomb)."""


@dataclass(frozen=True)
class Limits:
    max_members: int = 2_000_000
    max_member_bytes: int = 256 * 1024 * 1024
    max_total_bytes: int = 16 * 1024 * 1024 * 1024
    max_ratio: float = 100.0  # uncompressed / compressed, checked once past ratio_floor bytes
    ratio_floor: int = 1024 * 1024
    max_pixels: int = 40_000_000  # per image, checked from the header before decoding


def member_path(name: str) -> str:
    """The member's normalised relative path; raises UnsafeArchive for absolute or `..` paths."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise UnsafeArchive(f"archive member {name!r} has an absolute or non-POSIX path")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"archive member {name!r} escapes the archive with '..'")
    if not parts:
        raise UnsafeArchive(f"archive member {name!r} has an empty path")
    return "/".join(parts)


class _Budget:
    """Counts uncompressed bytes against the total cap and the compression ratio."""

    def __init__(self, compressed: int, limits: Limits):
        self.compressed, self.limits, self.total, self.members = max(1, compressed), limits, 0, 0

    def add(self, name: str, size: int) -> None:
        self.members += 1
        self.total += size
        lim = self.limits
        if self.members > lim.max_members:
            raise UnsafeArchive(f"archive has more than {lim.max_members} members")
        if size > lim.max_member_bytes:
            raise UnsafeArchive(f"archive member {name!r} is {size} bytes uncompressed (limit {lim.max_member_bytes})")
        if self.total > lim.max_total_bytes:
            raise UnsafeArchive(f"archive expands past {lim.max_total_bytes} bytes (decompression bomb?)")
        if self.total > lim.ratio_floor and self.total / self.compressed > lim.max_ratio:
            raise UnsafeArchive(f"archive expands {self.total / self.compressed:.0f}x (limit {lim.max_ratio:.0f}x): "
                                "refused as a decompression bomb")


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _read_capped(fileobj, name: str, declared: int, limits: Limits) -> bytes:
    data = fileobj.read(min(declared, limits.max_member_bytes) + 1)
    if len(data) > declared:
        raise UnsafeArchive(f"archive member {name!r} is larger than its header says")
    return data


EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (APPNOTE 4.3.16)
ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 4.3.15
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 4.3.14


def zip_entry_count(path: str | Path) -> int:
    """The entry count a zip's end-of-central-directory record declares (zip64 too), read from the
    file's last 64 KiB: what the central directory holds, known before any of it is parsed."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - (EOCD.size + 65535)))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < EOCD.size:
            raise DatasetUnavailable("not a readable zip archive: no end-of-central-directory record")
        entries = EOCD.unpack_from(tail, at)[4]  # total entries in the central directory
        locator_at = at - ZIP64_LOCATOR.size
        if locator_at >= 0 and tail[locator_at:locator_at + 4] == b"PK\x06\x07":
            offset = ZIP64_LOCATOR.unpack_from(tail, locator_at)[2]
            f.seek(offset)
            record = f.read(ZIP64_EOCD.size)
            if len(record) < ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
                raise DatasetUnavailable("not a readable zip archive: a bad zip64 end-of-central-directory record")
            entries = max(entries, ZIP64_EOCD.unpack_from(record)[7])
    return entries


def check_zip_entries(path: str | Path, limits: Limits) -> None:
    entries = zip_entry_count(path)
    if entries > limits.max_members:
        raise UnsafeArchive(f"archive has {entries:,} entries; at most {limits.max_members:,}")


def iter_members(path: str | Path, fmt: str, limits: Limits = Limits(), read: bool = True) -> Iterator[tuple[str, bytes]]:
    """Yield (relative path, bytes) for each regular file, in archive order. With read=False only
    the headers are checked (bytes is b''), which is what the upload endpoint does synchronously."""
    budget = _Budget(os.path.getsize(path), limits)
    if fmt == "zip":
        check_zip_entries(path, limits)  # before zipfile parses the whole central directory
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetUnavailable(f"not a readable zip archive: {exc}") from exc
        with archive:
            for info in archive.infolist():
                if _zip_is_link(info):
                    raise UnsafeArchive(f"archive member {info.filename!r} is a symlink")
                name = member_path(info.filename)
                budget.add(name, info.file_size)  # directories count as members too
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    raise UnsafeArchive(f"archive member {name!r} is encrypted")
                if not read:
                    yield name, b""
                    continue
                try:
                    with archive.open(info) as f:
                        yield name, _read_capped(f, name, info.file_size, limits)
                except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
                    raise DatasetUnavailable(f"archive member {name!r} is corrupt: {exc}") from exc
        return
    if fmt not in ("tar", "tar.gz"):
        raise DatasetUnavailable(f"not an archive format: {fmt!r}")
    try:
        archive = tarfile.open(path, mode="r|gz" if fmt == "tar.gz" else "r|")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetUnavailable(f"not a readable {fmt} archive: {exc}") from exc
    with archive:
        try:
            while (info := archive.next()) is not None:
                archive.members.clear()  # tarfile keeps every header it read: 300,000 directories are 150 MB
                if info.issym() or info.islnk():
                    raise UnsafeArchive(f"archive member {info.name!r} is a {'symlink' if info.issym() else 'hardlink'}")
                name = member_path(info.name)
                budget.add(name, info.size if info.isfile() else 0)  # every member counts, directories too
                if info.isdir():
                    continue
                if not info.isfile():
                    raise UnsafeArchive(f"archive member {name!r} is a device or fifo")
                if read:
                    f = archive.extractfile(info)
                    yield name, _read_capped(f, name, info.size, limits)
                else:
                    yield name, b""
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetUnavailable(f"{fmt} archive is corrupt: {exc}") from exc


def check_archive(path: str | Path, fmt: str, limits: Limits = Limits()) -> int:
    """Walk the headers (decompressing tar.gz as it goes); returns the number of files."""
    return sum(1 for _ in iter_members(path, fmt, limits, read=False))
