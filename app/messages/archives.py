"""Looking inside archives without unpacking them: the members of zip and tar archives (tar
also compressed with gzip, bzip2 or xz) and the content of a single compressed file.

Everything is read within one budget per attachment, so that a zip bomb costs neither memory
nor time: at most MAX_ENTRIES members in all, MAX_EXPANDED bytes decompressed in all, archives
nested at most MAX_DEPTH deep. Of an ordinary member only its first HEAD bytes are read, enough
to recognise its type; a nested archive is read whole, within the budget. What cannot be read
(an encrypted member, an unsupported compression method, a damaged archive, a format the
standard library does not read) raises Uninspectable: a provider that cannot look inside an
archive refuses it, as Gmail does, and so does Columba.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_DEPTH = 3
MAX_ENTRIES = 10_000
MAX_EXPANDED = 64 * 1024 * 1024
HEAD = 512  # tar's magic ends at byte 262

# Formats read here, by their first bytes; tar's magic is at 257 (POSIX.1-1988 ustar).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_COMPRESSED_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}
_ZIP_EXTENSIONS = frozenset({"zip", "jar", "docm", "xlsm", "pptm"})
_COMPRESSED_EXTENSIONS = {
    "gz": "gzip", "tgz": "gzip", "bz2": "bzip2", "tbz": "bzip2", "tbz2": "bzip2", "xz": "xz",
    "txz": "xz",
}  # fmt: skip
# Archives the standard library cannot read, by extension and by their first bytes.
UNREADABLE_EXTENSIONS = frozenset(
    {"7z", "ace", "arj", "lha", "lz", "lz4", "lzh", "lzma", "rar", "sit", "sitx", "z", "zipx",
     "zst", "zstd"}
)  # fmt: skip
_UNREADABLE_MAGIC = {
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "rar",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"MSCF\x00\x00\x00\x00": "cab",
    b"\x04\x22\x4d\x18": "lz4",
    b"LZIP": "lzip",
}


class Uninspectable(Exception):
    """The archive cannot be looked into; the message says why."""


@dataclass
class Budget:
    """What inspecting one attachment may still cost."""

    entries: int = MAX_ENTRIES
    expanded: int = MAX_EXPANDED

    def count(self, entries: int) -> None:
        """Spend `entries` members."""
        self.entries -= entries
        if self.entries < 0:
            raise Uninspectable(f"it holds more than {MAX_ENTRIES} files")

    def spend(self, size: int) -> None:
        """Spend `size` decompressed bytes."""
        self.expanded -= size
        if self.expanded < 0:
            raise Uninspectable(f"it expands to more than {MAX_EXPANDED // 2**20} MiB")


@dataclass(frozen=True, slots=True)
class Member:
    """One file in an archive: its name, its first bytes, and how to read all of it."""

    name: str
    head: bytes
    size: int  # as the archive declares it
    _read: Callable[[], bytes]

    def read(self, budget: Budget) -> bytes:
        """The whole content, paid from the budget (the declared size first, so a bomb is
        refused before it is decompressed)."""
        budget.spend(self.size)
        with _reading():
            data = self._read()
        budget.spend(max(0, len(data) - self.size))
        return data


def unreadable_format(data: bytes) -> str | None:
    """The name of an archive format the standard library cannot read, by its first bytes."""
    return next((name for magic, name in _UNREADABLE_MAGIC.items() if data.startswith(magic)), None)


def kind_of(data: bytes, ext: str) -> str | None:
    """`zip`, `tar`, `gzip`, `bzip2` or `xz` when `data` is such an archive (by content, or by
    an extension that says so), else None."""
    if data.startswith(_ZIP_MAGIC):
        return "zip"
    for kind, magic in _COMPRESSED_MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[257:262] == b"ustar":
        return "tar"
    if ext in _ZIP_EXTENSIONS:
        return "zip"
    return _COMPRESSED_EXTENSIONS.get(ext, "tar" if ext == "tar" else None)


def members(data: bytes, kind: str, name: str, budget: Budget) -> Iterator[Member]:
    """The members of an archive of `kind` called `name`; Uninspectable when it cannot be
    read."""
    with _reading():
        if kind == "zip":
            yield from _zip_members(data, budget)
        elif kind == "tar":
            yield from _tar_members(data, budget)
        else:
            yield from _compressed_members(data, kind, name, budget)


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """Any failure of a format reader means the archive cannot be inspected: refuse (fail
    closed) rather than let one of the dozen exceptions damaged input raises escape."""
    try:
        yield
    except Uninspectable:
        raise
    except NotImplementedError:  # zipfile: a compression method it lacks (Deflate64, PPMd)
        raise Uninspectable("it uses a compression method that cannot be read") from None
    except Exception as exc:
        raise Uninspectable(f"it is damaged ({type(exc).__name__})") from None


def _zip_members(data: bytes, budget: Budget) -> Iterator[Member]:
    """A zip's members, from its central directory."""
    # Counted before zipfile builds an object per entry: a 30 MB archive could hold 500,000.
    budget.count(data.count(b"PK\x01\x02"))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.flag_bits & 0x1:  # APPNOTE 4.4.4 bit 0: the member is encrypted
                raise Uninspectable(f"{info.filename} is encrypted")
            head = b"" if info.is_dir() else _zip_head(archive, info)
            yield Member(info.filename, head, info.file_size, _zip_reader(archive, info))


def _zip_head(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The first HEAD bytes of a member (only as much is decompressed)."""
    with archive.open(info) as member:
        return member.read(HEAD)


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    """Reads the whole member when called."""
    # zipfile stops at the declared size and checks the CRC, so the read is bounded.
    return lambda: archive.read(info)


def _tar_members(data: bytes, budget: Budget) -> Iterator[Member]:
    """A tar's members (names of links and directories too: their names are checked)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for info in archive:
            budget.count(1)
            content = archive.extractfile(info) if info.isfile() else None
            head = content.read(HEAD) if content is not None else b""
            yield Member(info.name, head, info.size, _tar_reader(archive, info))


def _tar_reader(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], bytes]:
    """Reads the whole member when called."""

    def read() -> bytes:
        content = archive.extractfile(info)
        return content.read() if content is not None else b""

    return read


def _compressed_members(data: bytes, kind: str, name: str, budget: Budget) -> Iterator[Member]:
    """A compressed tar's members, or the one file a compressed file holds (named without
    the compression's extension)."""
    expanded = _decompress(data, kind, limit=budget.expanded + 1)
    budget.spend(len(expanded))
    if _is_tar(expanded):
        yield from _tar_members(expanded, budget)
        return
    budget.count(1)
    inner = name.rpartition(".")[0] if "." in name else name
    yield Member(inner, expanded[:HEAD], len(expanded), lambda: expanded)


def _decompress(data: bytes, kind: str, *, limit: int) -> bytes:
    """At most `limit` bytes of what a gzip, bzip2 or xz stream holds (each reader
    decompresses only as much as it is asked for)."""
    raw = io.BytesIO(data)
    if kind == "gzip":
        with gzip.GzipFile(fileobj=raw) as gz:
            return gz.read(limit)
    if kind == "bzip2":
        with bz2.BZ2File(raw) as bz:
            return bz.read(limit)
    with lzma.LZMAFile(raw) as xz:
        return xz.read(limit)


def _is_tar(data: bytes) -> bool:
    """True for a tar archive (tarfile checks the header's checksum)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:"):
            return True
    except tarfile.TarError:
        return False
