"""Which attachments may be sent: Gmail's blocked executable types are refused at the API (and
at SMTP submission), so a message is never accepted only to be rejected by the recipient's
provider (CHECKLIST 47).

A type is blocked by name (every reading of the name: app.messages.filenames) or by content (an
executable under any name); archives are looked into, nested ones too (app.messages.archives),
and archives that cannot be looked into are refused, as Gmail refuses them.
"""

from __future__ import annotations

from app.messages import archives, filenames
from app.messages.archives import Budget, Member, Uninspectable

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


def extension(filename: str) -> str:
    """The last extension, lower-cased; trailing dots and spaces (which Windows drops) ignored."""
    return filenames.extension(filename)


def refusal(filename: str, content_type: str, data: bytes) -> str | None:
    """Why this attachment may not be sent, or None when it may."""
    problem = _name_refusal(filename)
    if problem is not None:
        return problem
    if data.startswith(_EXECUTABLE_MAGIC):
        return "the attachment is an executable program, which providers block"
    declared = content_type.split(";", 1)[0].strip().lower()
    signatures = _SIGNATURES.get(declared)
    if signatures and data and not data.startswith(signatures):
        return f"the attachment's content is not {declared} as declared"
    try:
        found = _inside(filename, data, Budget(), depth=0)
    except Uninspectable as exc:
        return f"the archive cannot be inspected for blocked files ({exc}), so it is refused"
    return None if found is None else f"the archive {found}"


def _name_refusal(filename: str) -> str | None:
    """Why the name alone is refused: a blocked type, or a name built to hide its type."""
    if filenames.has_direction_controls(filename):
        return "the file name holds Unicode direction controls, which disguise its type"
    names = [filenames.with_lookalike_dots(name) for name in filenames.readings(filename)]
    exts = [filenames.extension(name) for name in names]
    for ext in exts:
        if ext in BLOCKED_EXTENSIONS:
            return f"attachments of type .{ext} are blocked by Gmail and other providers"
        if ext in archives.UNREADABLE_EXTENSIONS:
            return f".{ext} archives cannot be inspected for blocked files, so they are refused"
    for name in names:
        ext = filenames.extension(name, keep_case=True)
        imitated = filenames.imitated(ext, BLOCKED_EXTENSIONS | archives.UNREADABLE_EXTENSIONS)
        if imitated is not None:
            return f"the file name imitates the .{imitated} extension with look-alike letters"
    return None


def _inside(name: str, data: bytes, budget: Budget, *, depth: int) -> str | None:
    """What makes the archive `data` refused ("contains ..."), or None; not an archive: None."""
    unreadable = archives.unreadable_format(data)
    if unreadable is not None:
        raise Uninspectable(f"{unreadable} archives cannot be read")
    kind = archives.kind_of(data, extension(name))
    if kind is None:
        return None
    if depth >= archives.MAX_DEPTH:
        raise Uninspectable(f"archives are nested more than {archives.MAX_DEPTH} deep")
    for member in archives.members(data, kind, name, budget):
        found = _member_refusal(member, budget, depth=depth)
        if found is not None:
            return found
    return None


def _member_refusal(member: Member, budget: Budget, *, depth: int) -> str | None:
    """What makes one member refused, looking into it when it is an archive itself."""
    shown = member.name if member.name.isprintable() else ascii(member.name)
    problem = _name_refusal(member.name.replace("\\", "/").rpartition("/")[2])
    if problem is not None:
        return f"contains {shown}: {problem}"
    if member.head.startswith(_EXECUTABLE_MAGIC):
        return f"contains {shown}, an executable program"
    ext = extension(member.name)
    if archives.unreadable_format(member.head) is None and not archives.kind_of(member.head, ext):
        return None
    found = _inside(member.name, member.read(budget), budget, depth=depth + 1)
    return None if found is None else f"contains {shown}, which {found}"
