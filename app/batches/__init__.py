"""Batches: groups of sends that can be paused, resumed or cancelled together."""
