"""The browser tests use the same real stack as the integration tests."""

from tests.integration.conftest import sipagent, stack, trunk

__all__ = ["sipagent", "stack", "trunk"]
