"""Erasing one address from everything an account stores (GDPR Art. 17)."""
