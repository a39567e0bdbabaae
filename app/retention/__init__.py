"""Purging what is older than COLUMBA_RETENTION."""
