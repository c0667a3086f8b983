"""Clients for Perspective Broker servers: the blocking facade and the ``pb`` command."""

__all__: list[str] = []
