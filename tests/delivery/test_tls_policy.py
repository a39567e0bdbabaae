"""The destination table of TLS levels, and which sessions meet a requirement."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.delivery.mx import MXHost
from app.delivery.smtp import TlsInfo
from app.delivery.tls_policy import (
    DestinationTable,
    TlsLevel,
    TlsRequirement,
    report_result,
    session_failure,
)

HOST = MXHost("mx.bank.test", 10, ("192.0.2.1",))
PLAIN = TlsInfo(offered=False)
UNVERIFIED = TlsInfo(
    version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", verified=False, offered=True,
    error="certificate of mx.bank.test did not validate: Hostname mismatch",
    failure_type="certificate-host-mismatch",
)  # fmt: skip
VERIFIED = TlsInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", verified=True, offered=True)


def test_the_table_matches_exact_names_and_subdomains() -> None:
    table = DestinationTable(["bank.test=verify", ".corp.test=encrypt", "Open.test = MAY"])
    assert table.level_for("bank.test") is TlsLevel.VERIFY
    assert table.level_for("BANK.test.") is TlsLevel.VERIFY
    assert table.level_for("sub.bank.test") is None
    assert table.level_for("eu.corp.test") is TlsLevel.ENCRYPT
    assert table.level_for("corp.test") is None
    assert table.level_for("open.test") is TlsLevel.MAY
    requirement = table.requirement_for("bank.test")
    assert requirement is not None
    assert requirement.source == "destination table: bank.test=verify"


@pytest.mark.parametrize("entry", ["bank.test", "bank.test=strict", "=verify", ".=verify"])
def test_bad_entries_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValidationError, match="COLUMBA_DESTINATION_TLS"):
        Settings(destination_tls=entry)


def test_sessions_against_levels() -> None:
    encrypt = TlsRequirement(TlsLevel.ENCRYPT, "destination table: bank.test=encrypt")
    verify = TlsRequirement(TlsLevel.VERIFY, "destination table: bank.test=verify")
    refusal = session_failure(encrypt, HOST, PLAIN)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (451, "4.7.4")
    assert session_failure(encrypt, HOST, UNVERIFIED) is None
    refusal = session_failure(verify, HOST, UNVERIFIED)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (451, "4.7.5")
    assert "Hostname mismatch" in refusal.text
    assert session_failure(verify, HOST, VERIFIED) is None
    testing = TlsRequirement(
        TlsLevel.VERIFY, "MTA-STS", mx_patterns=("*.bank.test",), report_only=True
    )
    assert session_failure(testing, HOST, PLAIN) is None  # reported, never enforced
    assert report_result(PLAIN, testing) == "starttls-not-supported"
    assert report_result(UNVERIFIED, testing) == "certificate-host-mismatch"
    assert report_result(VERIFIED, testing) == "success"
