"""Engagement tracking: open pixels, click redirects, unsubscribe links and their settings."""
