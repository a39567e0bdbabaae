"""The attachment policy: blocked types by every reading of the name and by content, archives
looked into (nested ones too) within a budget, archives that cannot be looked into refused."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import pytest

from app.messages import archives
from app.messages.attachments import refusal

MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00"  # the start of a Windows executable


def zipped(files: dict[str, bytes]) -> bytes:
    """A zip archive of `files`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def tarred(files: dict[str, bytes], mode: str = "w") -> bytes:
    """A tar archive of `files` (`w:gz`, `w:bz2`, `w:xz` compress it)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.mark.parametrize(
    "filename",
    [
        "evil.exe",
        "EVIL.EXE",
        "evil.exe.",  # Windows drops trailing dots and spaces
        "evil.exe . ",
        "evil.exe;.txt",  # a loose MIME parameter reader stops at ";"
        "evil.exe\x00.txt",  # a C string stops at NUL
        "evil.exe:x.txt",  # an NTFS stream of evil.exe
        "evil.ｅｘｅ",  # fullwidth: NFKC makes it exe
        "evil.e\u200bxe",  # a zero-width space inside the extension
        "evil.ex\u200fe",  # a right-to-left mark, as invisible
        "evil\u2024exe",  # a one-dot leader, NFKC's full stop
        "evil\ua4f8exe",  # Lisu tone mark, a look-alike full stop
        "C:\\Users\\me\\evil.exe",
    ],
)
def test_blocked_types_are_found_in_every_reading_of_the_name(filename: str) -> None:
    assert refusal(filename, "application/octet-stream", b"x") == (
        "attachments of type .exe are blocked by Gmail and other providers"
    )


@pytest.mark.parametrize(
    ("filename", "imitated"),
    [
        ("evil.ex\u0435", "exe"),  # Cyrillic е
        ("evil.\u0435\u0445\u0435", "exe"),  # Cyrillic е, х, е
        ("EVIL.\u0415\u0425\u0415", "exe"),
        ("setup.\u0455\u0441r", "scr"),  # Cyrillic ѕ, с
        ("library.d\u0406\u0406", "dll"),  # Cyrillic І, which reads as l
        ("archive.r\u0430r", "rar"),
    ],
)
def test_look_alike_letters_do_not_hide_a_blocked_type(filename: str, imitated: str) -> None:
    assert refusal(filename, "", b"x") == (
        f"the file name imitates the .{imitated} extension with look-alike letters"
    )


@pytest.mark.parametrize("filename", ["evil\u202etxt.exe", "invoice\u202egpj.pdf", "a\u2067.txt"])
def test_direction_controls_are_refused(filename: str) -> None:
    assert refusal(filename, "", b"x") == (
        "the file name holds Unicode direction controls, which disguise its type"
    )


@pytest.mark.parametrize(
    "filename",
    [
        "report.pdf",
        "Bericht f\u00fcr M\u00e4rz.txt",
        "\u043e\u0442\u0447\u0451\u0442.pdf",
        "\u062a\u0642\u0631\u064a\u0631\u200f.pdf",  # an Arabic name with its RLM
        "a.b.c.txt",
        "noext",
    ],
)
def test_ordinary_names_pass(filename: str) -> None:
    assert refusal(filename, "", b"just text") is None


def test_an_executable_is_found_by_its_content_inside_an_archive() -> None:
    found = refusal("docs.zip", "application/zip", zipped({"readme.txt": MZ + b"rest"}))
    assert found == "the archive contains readme.txt, an executable program"


def test_archives_inside_archives_are_looked_into() -> None:
    inner = zipped({"evil.exe": b"x"})
    found = refusal("docs.zip", "application/zip", zipped({"a.txt": b"a", "more.zip": inner}))
    assert found == (
        "the archive contains more.zip, which contains evil.exe: attachments of type .exe are "
        "blocked by Gmail and other providers"
    )
    # The inner archive is recognised by its content, whatever it is called.
    disguised = zipped({"notes.txt": zipped({"readme.txt": MZ})})
    assert refusal("docs.zip", "", disguised) == (
        "the archive contains notes.txt, which contains readme.txt, an executable program"
    )


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_archives_are_looked_into(mode: str) -> None:
    assert refusal("logs.tar", "", tarred({"logs/a.log": b"ok"}, mode)) is None
    found = refusal("logs.tar", "", tarred({"logs/a.log": b"ok", "run.sh.lnk": b"x"}, mode))
    assert found is not None
    assert found.startswith("the archive contains run.sh.lnk: attachments of type .lnk")


@pytest.mark.parametrize(
    ("filename", "compress"),
    [
        ("evil.exe.gz", gzip.compress),
        ("evil.exe.bz2", bz2.compress),
        ("evil.exe.xz", lzma.compress),
    ],
)
def test_a_compressed_file_is_looked_into(filename: str, compress: object) -> None:
    assert callable(compress)
    data = compress(b"harmless")
    assert refusal(filename, "", data) == (
        "the archive contains evil.exe: attachments of type .exe are blocked by Gmail and other "
        "providers"
    )
    assert refusal("notes.txt.gz", "", compress(MZ)) == (
        "the archive contains notes.txt, an executable program"
    )


@pytest.mark.parametrize(
    ("filename", "data", "problem"),
    [
        ("a.7z", b"7z\xbc\xaf\x27\x1c\x00\x04", ".7z archives cannot be inspected"),
        ("a.rar", b"Rar!\x1a\x07\x01\x00", ".rar archives cannot be inspected"),
        ("photo.jpg", b"Rar!\x1a\x07\x00", "(rar archives cannot be read)"),
        ("data.bin", b"7z\xbc\xaf\x27\x1c\x00\x04", "(7z archives cannot be read)"),
        ("docs.zip", zipped({"inner.7z": b"anything"}), "contains inner.7z: .7z archives"),
        ("docs.zip", zipped({"inner.dat": b"Rar!\x1a\x07\x00"}), "(rar archives cannot be"),
        ("docs.zip", b"PK\x03\x04 but not a zip", "(it is damaged (BadZipFile))"),
        ("logs.tar.gz", gzip.compress(b"x")[:-6], "(it is damaged (EOFError))"),
    ],
)
def test_archives_that_cannot_be_looked_into_are_refused(
    filename: str, data: bytes, problem: str
) -> None:
    found = refusal(filename, "", data)
    assert found is not None
    assert problem in found


def _patched(data: bytes, *, local: int, central: int, value: bytes) -> bytes:
    """The one-member zip `data` with the same field changed in both of its headers
    (APPNOTE 4.3.7 local header, 4.3.12 central directory header; offsets from each start)."""
    raw = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = raw.index(signature) + offset
        raw[start : start + len(value)] = value
    return bytes(raw)


def test_encrypted_members_cannot_be_looked_into() -> None:
    encrypted = _patched(zipped({"a.txt": b"x"}), local=6, central=8, value=b"\x01\x00")
    assert refusal("a.zip", "", encrypted) == (
        "the archive cannot be inspected for blocked files (a.txt is encrypted), so it is refused"
    )


def test_unreadable_compression_methods_are_refused() -> None:
    deflate64 = _patched(zipped({"a.txt": b"x"}), local=8, central=10, value=b"\x09\x00")
    found = refusal("a.zip", "", deflate64)
    assert found is not None
    assert "it uses a compression method that cannot be read" in found


def test_nesting_is_bounded() -> None:
    data = zipped({"evil.txt": b"x"})
    for level in range(archives.MAX_DEPTH + 1):
        data = zipped({f"level{level}.zip": data})
    found = refusal("deep.zip", "", data)
    assert found is not None
    assert f"(archives are nested more than {archives.MAX_DEPTH} deep)" in found


def test_entries_are_bounded_before_they_are_listed() -> None:
    data = zipped({f"f{n}.txt": b"" for n in range(archives.MAX_ENTRIES + 1)})
    found = refusal("many.zip", "", data)
    assert found is not None
    assert f"(it holds more than {archives.MAX_ENTRIES} files)" in found


def test_a_compression_bomb_costs_neither_memory_nor_time() -> None:
    # 256 MiB of zeros in about 1 MB of gzip (wbits 31), made without holding them.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    zero_mib = bytes(2**20)
    bomb = b"".join(compressor.compress(zero_mib) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 2 * 2**20
    tracemalloc.start()
    began = time.perf_counter()
    try:
        found = refusal("logs.tar.gz", "", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - began
    assert found is not None
    assert "(it expands to more than 64 MiB)" in found
    assert peak < 2 * archives.MAX_EXPANDED  # what the budget allows, not 256 MiB
    assert elapsed < 20  # decompressing 64 MiB takes well under a second; generous when busy


def test_ordinary_archives_pass() -> None:
    office = zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"})
    assert refusal("letter.docx", "", office) is None
    assert refusal("photos.zip", "application/zip", zipped({"a.jpg": b"\xff\xd8\xff"})) is None
    assert refusal("empty.zip", "", zipped({})) is None
