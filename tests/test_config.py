"""Settings: parsing from the environment and refusing unsafe production starts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.core.config import Settings, UnsafeSettingsError
from app.core.durations import format_duration, parse_duration


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMBA_RETRY_SCHEDULE", "1m, 5m,1h")
    monkeypatch.setenv("COLUMBA_MAX_MESSAGE_AGE", "90m")
    monkeypatch.setenv("COLUMBA_DNS_NAMESERVERS", "127.0.0.1:5353,[::1]:53")
    monkeypatch.setenv("COLUMBA_MX_PORT", "2525")
    monkeypatch.setenv("COLUMBA_RELAY_URL", "smtp://user:p%40ss@relay.example.com:587")
    settings = Settings()
    assert settings.retry_schedule == (
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(hours=1),
    )
    assert settings.max_message_age == timedelta(minutes=90)
    assert settings.dns_nameservers == ("127.0.0.1:5353", "[::1]:53")
    assert settings.mx_port == 2525
    relay = settings.relay
    assert relay is not None
    assert (relay.host, relay.port, relay.username, relay.password) == (
        "relay.example.com",
        587,
        "user",
        "p@ss",
    )


def test_defaults_match_the_architecture() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./var/columba.db"
    assert settings.redis_url is None
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.mx_port == 25
    assert settings.max_message_age == timedelta(days=5)
    assert settings.require_verified_domains is True
    assert settings.allow_private_destinations is False
    assert settings.retry_schedule[0] == timedelta(minutes=5)
    assert max(settings.retry_schedule) == timedelta(hours=1)


@pytest.mark.parametrize("bad", ["", "5x", "m5", "-1m"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_durations_round_trip() -> None:
    for text in ("30s", "5m", "1h", "5d", "90s"):
        assert format_duration(parse_duration(text)) == text


def test_production_start_without_secret_key_is_refused() -> None:
    settings = Settings(secret_key=None, hostname="mail.example.com")
    with pytest.raises(UnsafeSettingsError, match="COLUMBA_SECRET_KEY is not set"):
        settings.check_safe_to_start()


def test_short_secret_key_and_bare_hostname_are_refused() -> None:
    settings = Settings(secret_key="short", hostname="localhost")
    problems = settings.problems()
    assert any("shorter than" in p for p in problems)
    assert any("COLUMBA_HOSTNAME" in p for p in problems)


def test_dev_mode_starts_without_a_secret_key() -> None:
    Settings(secret_key=None, dev_mode=True, hostname="localhost").check_safe_to_start()


def test_safe_production_settings_start() -> None:
    Settings(secret_key="k" * 48, hostname="mail.example.com").check_safe_to_start()


def test_relay_url_must_be_smtp() -> None:
    with pytest.raises(ValueError, match="RELAY_URL"):
        Settings(relay_url="http://relay.example.com")


def test_forwarded_allow_ips_takes_addresses_networks_or_a_star(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMBA_FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.0.2.7,::1")
    assert Settings().forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.7", "::1")
    assert Settings(forwarded_allow_ips="*").forwarded_allow_ips == ("*",)
    monkeypatch.delenv("COLUMBA_FORWARDED_ALLOW_IPS")
    assert Settings().forwarded_allow_ips == ()  # nobody is believed by default
    with pytest.raises(ValueError, match="COLUMBA_FORWARDED_ALLOW_IPS"):
        Settings(forwarded_allow_ips="proxy.internal")
