"""What type an attachment's file name claims, as the people and programs that see it may read
it: extensions hidden behind `;`, NUL or trailing dots, look-alike letters (`evil.exе` with a
Cyrillic `е`) and direction controls that make `evil\u202etxt.exe` look like `evilexe.txt`."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Collection, Iterator

from confusable_homoglyphs import confusables  # type: ignore[import-untyped]

# Where a reader may end a name early: NUL (C strings), ";" (MIME parameters read loosely),
# ":" (an NTFS alternate data stream follows).
_CUTS = "\x00;:"
# Trailing characters Windows drops from a name (so "evil.exe." is evil.exe).
_DROPPED_AT_END = ". \t"
# Unicode's explicit embeddings, overrides and isolates (UAX #9 §2.1-§2.4): they reorder what
# is displayed, so `evil<U+202E>txt.exe` shows as `evilexe.txt`. (The implicit marks LRM, RLM
# and ALM, which right-to-left names may carry, cannot reverse Latin text; they are dropped
# with the other invisible characters when the type is read.)
DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def extension(filename: str, *, keep_case: bool = False) -> str:
    """The last extension, lower-cased unless asked; trailing dots and spaces (which Windows
    drops) ignored."""
    name = filename.strip().rstrip(_DROPPED_AT_END)
    base = (name if keep_case else name.lower()).replace("\\", "/").rpartition("/")[2]
    return base.rpartition(".")[2] if "." in base else ""


def readings(filename: str) -> Iterator[str]:
    """The names a reader may take `filename` for: as written, compatibility-normalised (NFKC
    makes `ｅｘｅ` exe), without invisible format characters, and cut at each character where
    some reader stops."""
    normal = unicodedata.normalize("NFKC", filename)
    visible = "".join(c for c in normal if unicodedata.category(c) != "Cf")
    seen = dict.fromkeys((filename, normal, visible))
    for name in list(seen):
        for index, char in enumerate(name):
            if char in _CUTS:
                seen.setdefault(name[:index])
    yield from seen


def has_direction_controls(filename: str) -> bool:
    """True when the name holds a control that reorders how it is displayed."""
    return any(char in DIRECTION_CONTROLS for char in filename)


def imitated(ext: str, extensions: Collection[str]) -> str | None:
    """The extension of `extensions` that the non-ASCII `ext` imitates with look-alike
    characters (Unicode's confusables, UTS #39 §4, as the confusable_homoglyphs package
    publishes them), if any."""
    if ext.isascii():
        return None
    table = _lookalikes()
    for target in extensions:
        if len(target) == len(ext) and all(
            char == wanted or wanted in table.get(char, ())
            for char, wanted in zip(ext, target, strict=True)
        ):
            return target
    return None


def with_lookalike_dots(name: str) -> str:
    """The name with characters that look like a full stop (`ꓸ`, `․`) made one."""
    if name.isascii():
        return name
    table = _lookalikes()
    return "".join("." if "." in table.get(char, ()) else char for char in name)


@functools.cache
def _lookalikes() -> dict[str, frozenset[str]]:
    """For each non-ASCII character, the lower-case ASCII characters it may be taken for
    (one step further within ASCII, so that Cyrillic `І`, like `I`, may be an `l`)."""
    data: dict[str, list[dict[str, str]]] = confusables.confusables_data

    def ascii_glyphs(char: str) -> set[str]:
        return {h["c"] for h in data.get(char, ()) if len(h["c"]) == 1 and h["c"].isascii()}

    table = {}
    for char in data:
        if len(char) != 1 or char.isascii():
            continue
        direct = ascii_glyphs(char)
        further = set().union(*(ascii_glyphs(glyph) for glyph in direct))
        if direct:
            table[char] = frozenset(glyph.lower() for glyph in direct | further)
    return table
