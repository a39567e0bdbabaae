"""strict_json: what Python's json accepts but nothing downstream could store or send again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.strict_json import (
    MAX_DEPTH,
    NON_FINITE_REFUSED,
    NUL_REFUSED,
    SURROGATE_REFUSED,
    TOO_DEEP,
    TOO_LONG_NUMBER,
    JsonRefused,
    loads,
    scrubbed,
)


@pytest.mark.parametrize(
    ("raw", "message", "field"),
    [
        (rb'{"metadata": {"a": "\ud800"}}', SURROGATE_REFUSED, "metadata.a"),
        (rb'{"to": [{"name": "x\uDFFFy"}]}', SURROGATE_REFUSED, "to.0.name"),
        (rb'{"metadata": {"\udc00": "a"}}', SURROGATE_REFUSED, "metadata.\ufffd"),
        (rb'{"text": "a\u0000b"}', NUL_REFUSED, "text"),
        (rb'{"metadata": {"a": NaN}}', NON_FINITE_REFUSED, "metadata.a"),
        (rb'{"metadata": {"a": [1, -Infinity]}}', NON_FINITE_REFUSED, "metadata.a.1"),
        (rb'{"metadata": {"a": 1e999}}', NON_FINITE_REFUSED, "metadata.a"),
        (b'{"a": ' + b"9" * 4301 + b"}", TOO_LONG_NUMBER, None),
        (b"[" * 1000 + b"]" * 1000, TOO_DEEP, None),
        (b"[" * 1000, TOO_DEEP, None),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), TOO_DEEP, "0" + ".0" * (MAX_DEPTH - 1)),
        (b'{"a": ' + b"[[], " * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH + b"}", TOO_DEEP, None),
    ],
)
def test_what_cannot_be_stored_is_refused_with_its_field(
    raw: bytes, message: str, field: str | None
) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads(raw)
    assert refused.value.message == message
    if field is not None:
        assert refused.value.field == field


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"emoji": "\ud83d\ude00", "escaped": "\\ud800", "nul": "\\u0000"}',
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b'{"css": "a { b: [c] } ]]]] {{{{", "n": 1.5e300, "i": ' + b"9" * 4300 + b"}",
    ],
)
def test_valid_json_parses_as_the_json_module_does(raw: bytes) -> None:
    assert loads(raw) == json.loads(raw)


def test_what_is_not_json_raises_json_errors() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(b'{"a": ')
    with pytest.raises(UnicodeDecodeError):
        loads(b'{"a": "\xff"}')


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _storable(value: Any) -> bool:
    """Independently of strict_json: no NUL, and every string encodes as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


@given(JSON)
def test_loads_refuses_exactly_what_cannot_be_stored(document: Any) -> None:
    raw = json.dumps(document).encode()  # \u escapes, lone surrogates and NUL included
    if _storable(document):
        assert loads(raw) == json.loads(raw)
    else:
        with pytest.raises(JsonRefused):
            loads(raw)


def test_scrubbed_replaces_lone_surrogates_and_keeps_pairs() -> None:
    stored = {"a\ud800": ["x\udc00y", 1, "\ud83d\ude00", None]}
    assert scrubbed(stored) == {"a\ufffd": ["x\ufffdy", 1, "\U0001f600", None]}
    json.dumps(scrubbed(stored), ensure_ascii=False).encode()


def test_scrubbed_returns_clean_values_themselves() -> None:
    clean = {"a": ["é", {"b": 1}]}
    assert scrubbed(clean) is clean


@pytest.mark.parametrize("raw", [b'{"a": "\xed\xa0\x80"}', b'{"a": "\xff"}'])
def test_bytes_are_decoded_strictly(raw: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        loads(raw)  # json.loads would decode the encoded surrogate with "surrogatepass"


def test_text_holding_a_surrogate_itself_is_refused() -> None:
    with pytest.raises(JsonRefused) as refused:
        loads('{"a": "\ud800"}')
    assert refused.value.field == "a"
