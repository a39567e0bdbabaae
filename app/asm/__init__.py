"""Unsubscribe groups (SendGrid's Advanced Suppression Manager): groups and their suppressions."""
