"""Stats for dashboards: counters per account, hour and category, kept with the events."""
