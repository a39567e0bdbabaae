"""Idempotency-Key: a retried send returns the first answer and sends nothing again."""
