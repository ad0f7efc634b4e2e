"""What the blocking and the asyncio holds share that does no I/O: the
hold's state, its argument checks, reading the acquisition events and the
end event, the requests a hold sends, and the address and credentials
a client dials. Kept here so both clients apply
one set of rules; only waiting, renewing and giving up differ between them.
"""

from __future__ import annotations

from typing import Optional

import grpc

from baton_client._pb.baton.v1 import election_pb2, lock_pb2
from baton_client.errors import BatonError, _ms


class _HoldState:
    """State and pure steps of a lock or candidacy; a subclass adds the I/O
    (threads or asyncio tasks) around them."""

    _event_field = "acquired"

    def __init__(self, client, key: str, ttl: float, timeout: Optional[float], renew: bool):
        self._client = client
        self.key = key
        self.ttl = ttl
        self._ttl_ms = _ms(ttl, "ttl")
        self._timeout_ms = None if timeout is None else _ms(timeout, "timeout")
        self._auto_renew = renew
        self.index: Optional[int] = None
        """The fencing token, once acquired."""
        self.deadline_unix_ms: int = 0
        self._call = None
        self._held = False
        self._lost = False

    @property
    def held(self) -> bool:
        """True between a successful acquire and release, unless the hold was lost."""
        return self._held and not self._lost

    @property
    def lost(self) -> bool:
        """True once the hold ended while we held it (it expired, or someone
        else released it). Guarded work should stop: the index is no longer
        valid. Stays True after release."""
        return self._lost

    def _take_acquire_event(self, ev) -> bool:
        """Applies one event read while waiting: True once granted (index
        and deadline set), False while queued; anything else is an error."""
        which = ev.WhichOneof("event")
        if which == "queued":
            self.index = ev.queued.index
            return False
        if which == self._event_field:
            got = getattr(ev, self._event_field)
            self.index = got.index
            self.deadline_unix_ms = got.deadline_unix_ms
            return True
        raise BatonError(f"{self.key!r}: unexpected {which!r} before acquisition")

    def _closed_before_acquisition(self) -> BatonError:
        """The error for a stream that ended before the grant."""
        return BatonError(f"{self.key!r}: stream closed before acquisition")

    def _renew_request(self, ttl: Optional[float]):
        """The Renew request for now + ttl (default: the ttl acquired with)."""
        ttl_ms = self._ttl_ms if ttl is None else _ms(ttl, "ttl")
        return lock_pb2.RenewRequest(key=self.key, index=self.index, ttl_ms=ttl_ms)


def _end_reason(ev) -> Optional[str]:
    """Why the hold ended, when `ev` is a Wait/Campaign stream's `ended`
    event; None for any other event."""
    if ev.WhichOneof("event") == "ended":
        return lock_pb2.EndReason.Name(ev.ended.reason)
    return None


def _wait_request(key, value, ttl_ms, timeout_ms, limit, lock_delay_ms):
    req = lock_pb2.WaitRequest(key=key, value=value, ttl_ms=ttl_ms, limit=limit, lock_delay_ms=lock_delay_ms)
    if timeout_ms is not None:
        req.timeout_ms = timeout_ms
    return req


def _campaign_request(election, name, ttl_ms, timeout_ms, lock_delay_ms):
    req = election_pb2.CampaignRequest(election=election, name=name, ttl_ms=ttl_ms, lock_delay_ms=lock_delay_ms)
    if timeout_ms is not None:
        req.timeout_ms = timeout_ms
    return req


def _channel_target(target: str, credentials):
    """The host:port to dial and the credentials to dial it with: an
    `http://` prefix is dropped, an `https://` one means TLS (the system's
    roots unless `credentials` are given)."""
    if target.startswith("http://"):
        target = target[len("http://") :]
    elif target.startswith("https://"):
        target = target[len("https://") :]
        if credentials is None:
            credentials = grpc.ssl_channel_credentials()
    return target, credentials
