"""The provider label: a fixed set of names, by the recipient's domain or its MX host."""

from __future__ import annotations

import pytest

from app.observability.providers import OTHER, PROVIDERS, provider_of


@pytest.mark.parametrize(
    ("domain", "mx_host", "expected"),
    [
        ("gmail.com", None, "gmail"),
        ("GoogleMail.com.", None, "gmail"),
        ("example.org", "aspmx.l.google.com", "gmail"),  # Google Workspace
        ("contoso.com", "contoso-com.mail.protection.outlook.com", "outlook"),
        ("hotmail.com", None, "outlook"),
        ("yahoo.com", None, "yahoo"),
        ("example.net", "mta5.am0.yahoodns.net", "yahoo"),
        ("icloud.com", None, "icloud"),
        ("example.test", "mx1.example.test", OTHER),
        ("notgmail.com", None, OTHER),  # a suffix, not a substring
        ("", None, OTHER),
    ],
)
def test_provider_of(domain: str, mx_host: str | None, expected: str) -> None:
    assert provider_of(domain, mx_host) == expected


def test_the_label_has_a_fixed_set_of_values() -> None:
    names = [name for name, _ in PROVIDERS]
    assert len(names) == len(set(names))
    assert OTHER not in names
