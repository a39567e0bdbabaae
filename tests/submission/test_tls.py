"""TLS set-up of the listener: the configured pair, clear errors, the dev certificate."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.core.config import Settings
from app.submission.tls import TlsSetupError, context_from_settings, ensure_dev_certificate


def test_dev_certificate_is_made_once_and_renewed_before_it_expires(
    tmp_path: Path, travel: Callable[[timedelta], None]
) -> None:
    cert, key = ensure_dev_certificate(tmp_path, "mta.columba.test")
    made = x509.load_pem_x509_certificate(cert.read_bytes())
    names = made.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "mta.columba.test"}
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert ensure_dev_certificate(tmp_path, "mta.columba.test") == (cert, key)
    assert cert.read_bytes() == made.public_bytes(Encoding.PEM)  # still valid: kept
    travel(timedelta(days=365))
    ensure_dev_certificate(tmp_path, "mta.columba.test")
    assert x509.load_pem_x509_certificate(cert.read_bytes()).serial_number != made.serial_number


def test_the_configured_pair_makes_a_tls12_context(tmp_path: Path) -> None:
    cert, key = ensure_dev_certificate(tmp_path, "localhost")
    context = context_from_settings(Settings(smtp_tls_cert=cert, smtp_tls_key=key))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_key_that_does_not_match_is_a_clear_error(tmp_path: Path) -> None:
    cert, _ = ensure_dev_certificate(tmp_path / "a", "localhost")
    _, other_key = ensure_dev_certificate(tmp_path / "b", "localhost")
    with pytest.raises(TlsSetupError, match="cannot load the TLS certificate"):
        context_from_settings(Settings(smtp_tls_cert=cert, smtp_tls_key=other_key))
