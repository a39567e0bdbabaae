"""Sending domains and their DKIM keys."""
