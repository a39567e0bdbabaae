"""SendGrid's X-SMTPAPI header: what is honoured, and what is refused rather than ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from app.submission.smtpapi import SmtpApiError, SmtpApiOptions, parse

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AHEAD = timedelta(days=7)


def test_honoured_keys() -> None:
    send_at = int((NOW + timedelta(hours=2)).timestamp())
    options = parse(
        json.dumps(
            {
                "category": ["welcome", "welcome", "trial"],
                "unique_args": {"user_id": "42", "attempt": 1, "beta": True},
                "send_at": send_at,
                "asm_group_id": 12,
                "ip_pool": "transactional",
                "filters": {"opentrack": {"settings": {"enable": 0}}, "clicktrack": {}},
            }
        ),
        now=NOW,
        max_ahead=AHEAD,
    )
    assert options == SmtpApiOptions(
        categories=("welcome", "trial"),
        unique_args={"user_id": "42", "attempt": 1, "beta": True},
        send_at=NOW + timedelta(hours=2),
        asm_group_id=12,
    )


def test_a_single_category_string_and_a_past_send_at() -> None:
    options = parse('{"category": "receipt", "send_at": 1}', now=NOW, max_ahead=AHEAD)
    assert options.categories == ("receipt",)
    assert options.send_at is None  # in the past: send now


def test_empty_personalisation_keys_are_harmless() -> None:
    assert (
        parse('{"to": [], "sub": {}, "section": {}}', now=NOW, max_ahead=AHEAD) == SmtpApiOptions()
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"category": 5}', "'category' must be a string or a list of strings"),
        ('{"category": ["a\\r\\nBcc: x@y.test"]}', "CR, LF, NUL"),
        (json.dumps({"category": [str(n) for n in range(11)]}), "at most 10 categories"),
        (json.dumps({"category": ["x" * 256]}), "1 to 255 characters"),
        ('{"unique_args": ["a"]}', "'unique_args' must be an object"),
        ('{"unique_args": {"a": {"nested": 1}}}', "'unique_args.a' must be a string"),
        (json.dumps({"unique_args": {"k": "v" * 10_001}}), "larger than 10000 bytes"),
        ('{"send_at": true}', "Unix timestamp"),
        (json.dumps({"send_at": int((NOW + timedelta(days=8)).timestamp())}), "at most 7d ahead"),
        ('{"asm_group_id": 0}', "integer from 1 to 2147483647"),
        ('{"send_each_at": [1, 2]}', "'send_each_at' (per-recipient personalisation)"),
        ('{"filters": {"footer": {"settings": {"enable": 1}}}}', "filter 'footer'"),
        ('{"filters": []}', "'filters' must be an object"),
        ('{"unique_arg": {}}', "unknown key 'unique_arg'"),
    ],
)
def test_what_cannot_be_honoured_is_refused(value: str, problem: str) -> None:
    with pytest.raises(SmtpApiError) as refused:
        parse(value, now=NOW, max_ahead=AHEAD)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        # Deterministic bad input: each once answered 451, so clients retried forever.
        ('{"send_at": 100000000000000000000000}', "at most 7d ahead"),
        ('{"send_at": 1e23}', "Unix timestamp"),
        ('{"asm_group_id": 1000000000000000000000000000}', "integer from 1 to 2147483647"),
        ('{"asm_group_id": 2147483648}', "integer from 1 to 2147483647"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 8 levels deep"),
        ('{"filters": ' + '{"a": ' * 9 + "{}" + "}" * 10, "nested more than 8 levels deep"),
        ('{"unique_args": {"a": NaN}}', "NaN is not a JSON number"),
        ('{"unique_args": {"a": -Infinity}}', "-Infinity is not a JSON number"),
        ('{"unique_args": {"a": 1e400}}', "too large a number"),
        # Lone surrogates and NUL, wherever they are: no column stores them.
        ('{"unique_args": {"a": "\\ud800"}}', "'unique_args.a' holds a lone UTF-16 surrogate"),
        ('{"unique_args": {"\\udfff": "x"}}', "'unique_args.\\udfff' holds a lone UTF-16"),
        ('{"category": "\\ud800"}', "'category' holds a lone UTF-16 surrogate"),
        ('{"category": ["ok", "\\ud83d"]}', "'category.1' holds a lone UTF-16 surrogate"),
        ('{"ip_pool": "\\ud800"}', "'ip_pool' holds a lone UTF-16 surrogate"),
        ('{"filters": {"x\\ud800": {}}}', "holds a lone UTF-16 surrogate"),
        ('{"unique_args": {"a": "\\u0000"}}', "'unique_args.a' holds a NUL character"),
    ],
)
def test_input_no_column_can_store_is_refused(value: str, problem: str) -> None:
    with pytest.raises(SmtpApiError) as refused:
        parse(value, now=NOW, max_ahead=AHEAD)
    assert problem in str(refused.value)
    str(refused.value).encode("ascii")  # the reply names the problem without echoing it


def test_a_surrogate_pair_is_text() -> None:
    options = parse('{"unique_args": {"mood": "\\ud83d\\ude00"}}', now=NOW, max_ahead=AHEAD)
    assert options.unique_args == {"mood": "\U0001f600"}


def test_a_key_with_line_breaks_is_not_echoed_raw() -> None:
    with pytest.raises(SmtpApiError) as refused:
        parse('{"unique_args": {"a\\r\\n250 Ok": [1]}}', now=NOW, max_ahead=AHEAD)
    assert "\r" not in str(refused.value)
