"""Accounts (tenants) and their API keys."""
