"""The one error hierarchy used across sigstream.

``TransientError``  -> retry with backoff and jitter (see :func:`engine.retry.retry_transient`).
``InvalidInput``    -> the record goes to the dead-letter output with its reason.
``FatalError``      -> stop; retrying or skipping would be wrong.
"""

from __future__ import annotations


class SigstreamError(Exception):
    """Base class of every error sigstream raises on purpose."""


class TransientError(SigstreamError):
    """A failure that may succeed when retried (network, broker restart, Redis down)."""


class InvalidInput(SigstreamError):
    """A record or argument that can never be processed as given; it is dead-lettered with ``reason``."""

    def __init__(self, reason: str, *, raw: object = None, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.line = line


class FatalError(SigstreamError):
    """A condition the process cannot recover from (bad configuration, missing dependency)."""


class MissingDependency(FatalError):
    """An optional heavy dependency is not installed; the message says what to install."""

    def __init__(self, package: str, purpose: str, install: str | None = None) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install {install or package}")
        self.package = package
