"""The bounce tests' inbound listener, for erasing what it received."""

from tests.bounces.conftest import inbound

__all__ = ["inbound"]
