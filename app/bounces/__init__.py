"""Asynchronous feedback: VERP return paths, DSN and ARF reports received by `columba inbound`."""
