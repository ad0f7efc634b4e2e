"""The asyncio client for baton (`grpc.aio`), with the same guards as the
blocking one:

    from baton_client.aio import AsyncClient

    async with AsyncClient("127.0.0.1:4001") as client:
        async with client.lock("jobs/nightly", ttl=10) as lock:
            await do_work(fencing_token=lock.index)

Entering `async with client.lock(...)` waits for the grant; meanwhile a task
renews the hold every ttl/3 and another reads the rest of the Wait stream, so
`.lost` turns True as soon as the hold ends under us (expiry, someone else's
release). Leaving the block releases by index (or resigns by name).
Cancelling the task that waits (e.g. `asyncio.wait_for`) withdraws the
request, as a disconnecting client does.

Times are in seconds (floats) here and milliseconds on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

import grpc
import grpc.aio

from baton_client.client import DEFAULT_TARGET, Check, Leader
from baton_client._hold import _HoldState, _campaign_request, _channel_target, _end_reason, _wait_request
from baton_client.errors import BatonError, NotFound, _ms, _wrap
from baton_client._pb.baton.v1 import election_pb2, election_pb2_grpc, lock_pb2, lock_pb2_grpc

log = logging.getLogger("baton_client.aio")

__all__ = ["AsyncClient", "AsyncLock", "AsyncCampaign"]


class _AsyncHold(_HoldState):
    """What AsyncLock and AsyncCampaign share: acquire through a stream,
    renew in a task, watch the stream for the end of the hold, give it up on
    exit."""

    def __init__(self, client: "AsyncClient", key: str, ttl: float, timeout: Optional[float], renew: bool):
        super().__init__(client, key, ttl, timeout, renew)
        self._releasing = False
        self._ended = asyncio.Event()
        self._watcher: Optional[asyncio.Task] = None
        self._renewer: Optional[asyncio.Task] = None

    def _open(self):
        raise NotImplementedError

    async def _give_up(self):
        raise NotImplementedError

    async def wait_lost(self) -> None:
        """Returns when the hold has ended (lost, or released)."""
        await self._ended.wait()

    async def acquire(self) -> "_AsyncHold":
        if self._held:
            raise RuntimeError("already acquired")
        call = self._open()
        self._call = call
        try:
            while True:
                ev = await call.read()
                if ev is grpc.aio.EOF:
                    raise self._closed_before_acquisition()
                if self._take_acquire_event(ev):
                    break
        except grpc.RpcError as e:
            call.cancel()
            raise _wrap(e, f"acquire {self.key!r}") from None
        except BaseException:
            # Cancelled (a timeout around us, a shutdown): withdraw the request.
            call.cancel()
            raise
        self._held = True
        self._lost = False
        self._releasing = False
        self._ended.clear()
        self._watcher = asyncio.ensure_future(self._watch())
        if self._auto_renew and self._ttl_ms > 0:
            self._renewer = asyncio.ensure_future(self._renew_loop())
        return self

    def _mark_lost(self, why: str) -> None:
        if not self._releasing:
            self._lost = True
            log.warning("baton: hold on %r (index %s) lost: %s", self.key, self.index, why)
        self._ended.set()

    async def _watch(self):
        why = "the stream closed"
        try:
            while True:
                ev = await self._call.read()
                if ev is grpc.aio.EOF:
                    break
                reason = _end_reason(ev)
                if reason is not None:
                    why = reason
                    break
        except asyncio.CancelledError:
            self._ended.set()
            raise
        except grpc.RpcError as e:
            why = f"the stream failed: {e.code().name}"
        self._mark_lost(why)

    async def renew(self, ttl: Optional[float] = None) -> None:
        """Resets the hold's deadline to now + ttl (default: the ttl it was acquired with)."""
        req = self._renew_request(ttl)
        try:
            resp = await self._client._lock.Renew(
                req,
                timeout=self._client.rpc_timeout,
                metadata=self._client._metadata,
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"renew {self.key!r} index {self.index}") from None
        self.deadline_unix_ms = resp.deadline_unix_ms

    async def _renew_loop(self):
        interval = self._ttl_ms / 3000.0
        while True:
            try:
                await asyncio.wait_for(self._ended.wait(), timeout=interval)
                return  # the hold ended
            except asyncio.TimeoutError:
                pass
            try:
                await self.renew()
            except NotFound:
                self._mark_lost("renew found no entry")
                return
            except BatonError as e:  # maybe transient: try again next round
                log.warning("baton: renewing %r failed: %s", self.key, e)

    async def release(self) -> None:
        """Gives the hold up. Does nothing if it is not held; a hold lost
        meanwhile is not an error (check `.lost`)."""
        if not self._held:
            return
        self._releasing = True
        if self._renewer is not None:
            self._renewer.cancel()
        try:
            if not self._ended.is_set():
                await self._give_up()
        except NotFound:
            pass  # it expired or was released by someone else meanwhile
        finally:
            self._held = False
            if self._call is not None:
                self._call.cancel()
            for task in (self._renewer, self._watcher):
                if task is not None:
                    task.cancel()
                    try:
                        await task
                    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - ending it is all we want
                        pass
            self._watcher = self._renewer = None
            self._ended.set()

    async def __aenter__(self):
        return await self.acquire()

    async def __aexit__(self, exc_type, exc, tb):
        try:
            await self.release()
        except BatonError:
            if exc_type is None:
                raise
            log.exception("baton: releasing %r failed while handling another error", self.key)
        return False


class AsyncLock(_AsyncHold):
    """A held (or to-be-held) lock or semaphore slot; `async with` it."""

    def __init__(self, client, key, ttl, value, timeout, renew, limit, lock_delay):
        super().__init__(client, key, ttl, timeout, renew)
        self.value = value
        self.limit = limit
        self._lock_delay_ms = _ms(lock_delay, "lock_delay")

    def _open(self):
        req = _wait_request(self.key, self.value, self._ttl_ms, self._timeout_ms, self.limit, self._lock_delay_ms)
        return self._client._lock.Wait(req, metadata=self._client._metadata)

    async def _give_up(self):
        try:
            await self._client._lock.Release(
                lock_pb2.ReleaseRequest(key=self.key, index=self.index),
                timeout=self._client.rpc_timeout,
                metadata=self._client._metadata,
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"release {self.key!r} index {self.index}") from None


class AsyncCampaign(_AsyncHold):
    """A candidacy: `async with` waits until elected and resigns on exit."""

    _event_field = "elected"

    def __init__(self, client, election, name, ttl, timeout, renew, lock_delay):
        if not name:
            raise ValueError("a candidate needs a non-empty name")
        super().__init__(client, election, ttl, timeout, renew)
        self.election = election
        self.name = name
        self._lock_delay_ms = _ms(lock_delay, "lock_delay")

    def _open(self):
        req = _campaign_request(self.election, self.name, self._ttl_ms, self._timeout_ms, self._lock_delay_ms)
        return self._client._election.Campaign(req, metadata=self._client._metadata)

    async def _give_up(self):
        try:
            await self._client._election.Resign(
                election_pb2.ResignRequest(election=self.election, name=self.name),
                timeout=self._client.rpc_timeout,
                metadata=self._client._metadata,
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"resign {self.name!r} from {self.election!r}") from None

    resign = _AsyncHold.release


class AsyncClient:
    """An asyncio connection to a baton server; the arguments are those of
    the blocking `Client`. Make it inside a running event loop."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        rpc_timeout: float = 10.0,
        token: Optional[str] = None,
    ):
        target, credentials = _channel_target(target, credentials)
        self.target = target
        self.rpc_timeout = rpc_timeout
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._lock = lock_pb2_grpc.LockStub(self._channel)
        self._election = election_pb2_grpc.ElectionStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False

    def lock(
        self,
        key: str,
        ttl: float = 30.0,
        value: str = "",
        timeout: Optional[float] = None,
        *,
        renew: bool = True,
        limit: int = 1,
        lock_delay: float = 0.0,
    ) -> AsyncLock:
        """A lock on `key`, acquired on `async with` entry (or `await .acquire()`);
        the arguments are those of `Client.lock`."""
        return AsyncLock(self, key, ttl, value, timeout, renew, limit, lock_delay)

    def campaign(
        self,
        election: str,
        name: str,
        ttl: float = 30.0,
        timeout: Optional[float] = None,
        *,
        renew: bool = True,
        lock_delay: float = 0.0,
    ) -> AsyncCampaign:
        """A candidacy of `name` in `election`, as `Client.campaign`."""
        return AsyncCampaign(self, election, name, ttl, timeout, renew, lock_delay)

    async def get(self, key: str):
        """The raw GetResponse for `key`: holders, queue, limit, delay."""
        try:
            return await self._lock.Get(
                lock_pb2.GetRequest(key=key), timeout=self.rpc_timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"get {key!r}") from None

    async def check(self, key: str, index: int) -> Check:
        """Whether `index` (a fencing token) holds `key` now; truthy when current."""
        try:
            resp = await self._lock.Check(
                lock_pb2.CheckRequest(key=key, index=index), timeout=self.rpc_timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"check {key!r} index {index}") from None
        return Check._from_pb(resp)

    async def leader(self, election: str) -> Optional[Leader]:
        """The current leader, or None."""
        try:
            resp = await self._election.Leader(
                election_pb2.LeaderRequest(election=election), timeout=self.rpc_timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"leader of {election!r}") from None
        return Leader._from_pb(resp)
