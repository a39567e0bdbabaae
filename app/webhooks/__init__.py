"""Webhooks: endpoints, a durable outbox of events, signed batched deliveries."""
