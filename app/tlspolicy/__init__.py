"""Receivers' TLS policies (MTA-STS, RFC 8461) and our reports to them (TLS-RPT, RFC 8460)."""
