"""The exceptions hived raises.

Every error hived means to raise derives from :class:`HivedError`. Where an error also means
something a builtin already names, it subclasses that builtin too, so callers that do not know
hived can still catch it (``ConfigError`` is a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence


class HivedError(Exception):
    """The root of every error hived raises on purpose."""


class ConfigError(HivedError, ValueError):
    """The config file is unreadable or invalid.

    ``problems`` holds every mistake found, one line each, already prefixed with the file name
    and key path; ``str()`` joins them with newlines.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class ProtocolError(HivedError, ValueError):
    """A peer sent a frame that is not a valid message.

    ``code`` is one of the wire error codes (``bad_json``, ``bad_request``, ``unknown_type``);
    ``request_id`` is the frame's ``id`` when one could be read.
    """

    def __init__(self, code: str, message: str, request_id: object = None) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(message)


class RequestError(HivedError):
    """A well-formed request that cannot be carried out: it becomes an ``error`` reply.

    ``code`` is one of ``not_found``, ``forbidden``, ``conflict``, ``bad_request``, ``internal``.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class StoreError(HivedError, OSError):
    """The event store cannot be opened or written."""


class StoreUnusable(StoreError):
    """The event store's file is damaged, empty, not hived's, from a newer hived, or not
    accessible: starting again will not fix it (hived exits 78, as for a config error)."""
