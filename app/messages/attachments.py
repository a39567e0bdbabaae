"""Which attachments may be sent: Gmail's blocked executable types are refused at the API, so
a message is never accepted only to be rejected by the recipient's provider (CHECKLIST 47)."""

from __future__ import annotations

import io
import zipfile

# Gmail refuses messages carrying these extensions, directly or inside an archive
# ("File types blocked in Gmail", Google Workspace help, 2025).
BLOCKED_EXTENSIONS = frozenset(
    {
        "ade", "adp", "apk", "appx", "appxbundle", "bat", "cab", "chm", "cmd", "com", "cpl",
        "diagcab", "diagcfg", "diagpack", "dll", "dmg", "ex", "ex_", "exe", "hta", "img", "ins",
        "iso", "isp", "jar", "jnlp", "js", "jse", "lib", "lnk", "mde", "mjs", "msc", "msi",
        "msix", "msixbundle", "msp", "mst", "nsh", "pif", "ps1", "scr", "sct", "shb", "sys",
        "vb", "vbe", "vbs", "vhd", "vxd", "wsc", "wsf", "wsh", "xll",
    }
)  # fmt: skip
_ARCHIVE_EXTENSIONS = frozenset({"zip", "jar", "docm", "xlsm", "pptm"})
# Executable formats by their first bytes: PE (Windows), ELF, Mach-O (both byte orders, fat).
_EXECUTABLE_MAGIC = (
    b"MZ",
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)
# Declared types whose content is easy to recognise; a mismatch means a disguised file.
_SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
    "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
}
_MAX_ARCHIVE_ENTRIES = 10_000


def extension(filename: str) -> str:
    """The last extension, lower-cased; trailing dots and spaces (which Windows drops) ignored."""
    name = filename.strip().rstrip(". ").lower()
    return name.rpartition(".")[2] if "." in name else ""


def refusal(filename: str, content_type: str, data: bytes) -> str | None:
    """Why this attachment may not be sent, or None when it may."""
    ext = extension(filename)
    if ext in BLOCKED_EXTENSIONS:
        return f"attachments of type .{ext} are blocked by Gmail and other providers"
    if data.startswith(_EXECUTABLE_MAGIC):
        return "the attachment is an executable program, which providers block"
    declared = content_type.split(";", 1)[0].strip().lower()
    signatures = _SIGNATURES.get(declared)
    if signatures and data and not data.startswith(signatures):
        return f"the attachment's content is not {declared} as declared"
    if ext in _ARCHIVE_EXTENSIONS or data.startswith(b"PK\x03\x04"):
        return _archive_refusal(data)
    return None


def _archive_refusal(data: bytes) -> str | None:
    """Gmail also blocks archives that contain a blocked type."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()[:_MAX_ARCHIVE_ENTRIES]
    except (zipfile.BadZipFile, ValueError, OSError):
        return None  # not a readable archive: nothing inside to block
    for name in names:
        ext = extension(name.rpartition("/")[2])
        if ext in BLOCKED_EXTENSIONS:
            return f"the archive contains {name}, a type blocked by Gmail and other providers"
    return None
