"""baton's errors, and the conversion of a gRPC error into one of them;
shared by the blocking and the asyncio clients (no I/O here).
"""

from __future__ import annotations

from typing import Optional

import grpc


# --- errors -----------------------------------------------------------------


class BatonError(Exception):
    """A baton call failed. `code` is the grpc.StatusCode, `details` the server's message."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, details: str = ""):
        super().__init__(message)
        self.code = code
        self.details = details


class LockTimeout(BatonError, TimeoutError):
    """The lock (or leadership) was not acquired within `timeout`; nothing is left queued."""


class LockAborted(BatonError):
    """The queued request was released by someone else before it acquired."""


class LimitMismatch(BatonError):
    """The key is in use with another limit (a semaphore of N, or a lock);
    `details` names the key's limit."""


class NotFound(BatonError):
    """No entry matches the index/value/name given."""


class Unauthenticated(BatonError):
    """The server requires a token (baton --auth-file) and got none, or an unknown one."""


class PermissionDenied(BatonError):
    """The token may not do this on this key (outside its prefixes, or without the right)."""


def _wrap(err: grpc.RpcError, what: str) -> BatonError:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    message = f"{what}: {code.name if code else 'error'}: {details}"
    if code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("limit mismatch"):
        return LimitMismatch(message, code, details)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION):
        return LockTimeout(message, code, details)
    if code == grpc.StatusCode.ABORTED:
        return LockAborted(message, code, details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message, code, details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message, code, details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(message, code, details)
    return BatonError(message, code, details)


def _ms(seconds: float, what: str) -> int:
    if seconds < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {seconds!r}")
    ms = round(seconds * 1000)
    return max(ms, 1) if seconds > 0 else 0
