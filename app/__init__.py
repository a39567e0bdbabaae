"""Columba: self-hosted transactional email."""
