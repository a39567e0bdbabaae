"""SMTP submission: `columba smtp` accepts mail from anything that speaks SMTP (RFC 6409)."""
