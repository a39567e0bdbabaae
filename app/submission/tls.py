"""TLS for the submission listener: the configured certificate, or for `columba dev` a
self-signed one made on first start."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from app.core import clock
from app.core.config import Settings

DEV_CERT_DAYS = 365


class TlsSetupError(RuntimeError):
    """The listener cannot run TLS with these settings; the message says what to change."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context: TLS 1.2 or newer (RFC 8996, RFC 8314 §4.1)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def context_from_settings(settings: Settings) -> ssl.SSLContext:
    """The context for COLUMBA_SMTP_TLS_CERT / _KEY, or a clear error saying what is wrong."""
    cert, key = settings.smtp_tls_cert, settings.smtp_tls_key
    if cert is None or key is None:
        raise TlsSetupError(
            "COLUMBA_SMTP_TLS_CERT and COLUMBA_SMTP_TLS_KEY must name a PEM certificate (chain) "
            "and its private key: the submission listener offers AUTH only over TLS "
            f"(RFC 4954 §4). Use a certificate for {settings.hostname} (e.g. from Let's "
            "Encrypt); `columba dev` makes a self-signed one for local use."
        )
    for name, path in (("CERT", cert), ("KEY", key)):
        if not path.is_file():
            raise TlsSetupError(f"COLUMBA_SMTP_TLS_{name}={path} is not a readable file")
    try:
        return server_context(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(
            f"cannot load the TLS certificate {cert} with key {key}: {exc}"
        ) from exc


def ensure_dev_certificate(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, 127.0.0.1 and `hostname`, made when missing or
    about to expire; returns (cert, key) paths."""
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    if cert_path.is_file() and key_path.is_file() and _still_valid(cert_path):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(_self_signed(key, hostname).public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _self_signed(key: rsa.RSAPrivateKey, hostname: str) -> x509.Certificate:
    """A one-year certificate naming the machine's local names."""
    now = clock.now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Columba dev SMTP")])
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
        x509.IPAddress(ipaddress.IPv6Address("::1")),
    ]
    if hostname != "localhost":
        names.append(x509.DNSName(hostname))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DEV_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def _still_valid(cert_path: Path) -> bool:
    """True when the certificate is good for at least another day."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc > clock.now() + datetime.timedelta(days=1)
