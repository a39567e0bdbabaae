"""Suppressions: addresses an account no longer sends to, and why."""
