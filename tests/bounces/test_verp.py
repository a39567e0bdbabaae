"""VERP addresses: the token names a recipient and carries an HMAC."""

from __future__ import annotations

import pytest

from app.bounces import verp
from app.core.ids import new_id

KEY = b"k" * 40


def test_round_trip_names_the_recipient_and_domain() -> None:
    recipient_id = new_id()
    address = verp.return_path(recipient_id, "Bounces.Sender.test", secret_key=KEY)
    local, _, domain = address.partition("@")
    assert local.startswith("bounces+")
    assert len(local) <= 64
    assert domain == "bounces.sender.test"
    parsed = verp.parse(address, secret_key=KEY)
    assert parsed == verp.VerpAddress(recipient_id=recipient_id, domain="bounces.sender.test")
    assert verp.parse("<" + address.upper() + ">", secret_key=KEY) == parsed


@pytest.mark.parametrize(
    "mangle",
    [
        lambda a: a.replace("@bounces.sender.test", "@bounces.other.test"),  # another domain
        lambda a: a[:20] + ("0" if a[20] != "0" else "1") + a[21:],  # another recipient
        lambda a: a.replace("-", "-x", 1)[:-1],  # a tampered MAC
        lambda a: a.replace("bounces+", "bounce+"),
        lambda a: "postmaster@bounces.sender.test",
    ],
)
def test_tampered_addresses_are_refused(mangle: object) -> None:
    address = verp.return_path(new_id(), "bounces.sender.test", secret_key=KEY)
    assert callable(mangle)
    with pytest.raises(verp.InvalidVerpAddress):
        verp.parse(mangle(address), secret_key=KEY)


def test_another_key_does_not_verify() -> None:
    address = verp.return_path(new_id(), "bounces.sender.test", secret_key=KEY)
    with pytest.raises(verp.InvalidVerpAddress):
        verp.parse(address, secret_key=b"z" * 40)
