"""Python client for baton, the lock and leader-election service.

    from baton_client import Client

    with Client("127.0.0.1:4001") as client:
        with client.lock("jobs/nightly", ttl=10) as lock:
            do_work(fencing_token=lock.index)

The asyncio client, with the same guards, is `baton_client.aio.AsyncClient`
(`async with client.lock(...)`).
"""

from baton_client.client import (
    DEFAULT_TARGET,
    BatonError,
    Campaign,
    Check,
    Client,
    Holder,
    Leader,
    LimitMismatch,
    Lock,
    LockAborted,
    LockTimeout,
    NotFound,
    Observation,
    PermissionDenied,
    Unauthenticated,
)

__all__ = [
    "DEFAULT_TARGET",
    "BatonError",
    "Campaign",
    "Check",
    "Client",
    "Holder",
    "Leader",
    "LimitMismatch",
    "Lock",
    "LockAborted",
    "LockTimeout",
    "NotFound",
    "Observation",
    "PermissionDenied",
    "Unauthenticated",
]
