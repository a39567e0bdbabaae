"""The embedded default: `columba dev`, its capture mailbox and the embedded Redis."""
