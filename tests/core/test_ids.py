"""Identifiers keep the ULID layout: 26 Crockford base32 characters, time first."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.core import clock
from app.core.ids import _ALPHABET, encode, new_id


def _by_division(value: int) -> str:
    """The plain definition: 26 base-32 digits, most significant first."""
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_encoding_matches_the_definition(value: int) -> None:
    assert encode(value) == _by_division(value)


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    earlier = new_id()
    clock._offset += timedelta(milliseconds=2)
    try:
        later = new_id()
    finally:
        clock._offset -= timedelta(milliseconds=2)
    assert len(earlier) == len(later) == 26
    assert earlier < later
    assert len({new_id() for _ in range(10_000)}) == 10_000
