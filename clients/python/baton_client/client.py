"""A thin, blocking Python client for baton's gRPC API (the asyncio one,
with the same guards, is `baton_client.aio`).

`Client.lock()` and `Client.campaign()` return context managers that acquire
(by consuming the Wait/Campaign stream until `acquired`/`elected`), keep the
hold alive with a background renewer thread at about ttl/3, notice when the
hold ends under them (`.lost`), and release by index (or resign by name) on
exit. `Client.leader()` and `Client.observe()` read an election.

Times are in seconds (floats) in this API and milliseconds on the wire.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Optional

import grpc

try:
    from baton_client._pb.baton.v1 import election_pb2, election_pb2_grpc, lock_pb2, lock_pb2_grpc
except ImportError as e:  # pragma: no cover - only without generated stubs
    raise ImportError(
        "baton_client's gRPC stubs are missing; run `python generate.py` in clients/python "
        "(needs grpcio-tools) first"
    ) from e

log = logging.getLogger("baton_client")

DEFAULT_TARGET = "127.0.0.1:4001"


# errors and time conversion live in baton_client.errors, shared with the
# asyncio client; importing them here keeps `baton_client.client.X` working.
from baton_client.errors import (  # noqa: E402
    BatonError,
    LimitMismatch,
    LockAborted,
    LockTimeout,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    _ms,
    _wrap,
)
from baton_client._hold import (  # noqa: E402
    _campaign_request,
    _channel_target,
    _end_reason,
    _HoldState,
    _wait_request,
)


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _Token(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends `authorization: Bearer TOKEN` with every call. (gRPC's call
    credentials would refuse a plaintext channel; a token over plaintext is
    the operator's choice, as with curl.)"""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, d):
        metadata = list(d.metadata or []) + [self._header]
        return _CallDetails(
            d.method, d.timeout, metadata, d.credentials,
            getattr(d, "wait_for_ready", None), getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


# --- results ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leader:
    """The current leader of an election."""

    name: str
    index: int
    ttl_ms: int
    elected_unix_ms: int
    deadline_unix_ms: int

    @classmethod
    def _from_pb(cls, resp) -> Optional["Leader"]:
        if not resp.HasField("leader"):
            return None
        le = resp.leader
        return cls(le.name, le.index, le.ttl_ms, le.elected_unix_ms, le.deadline_unix_ms)


@dataclasses.dataclass(frozen=True)
class Holder:
    """One holder of a key (a lock has one, a semaphore up to its limit)."""

    index: int
    value: str
    ttl_ms: int
    acquired_unix_ms: int
    deadline_unix_ms: int
    lock_delay_ms: int

    @classmethod
    def _from_pb(cls, h) -> "Holder":
        return cls(h.index, h.value, h.ttl_ms, h.acquired_unix_ms, h.deadline_unix_ms, h.lock_delay_ms)


@dataclasses.dataclass(frozen=True)
class Check:
    """What a fencing-token check found: whether the index holds the key
    now, and the key's holders in grant order."""

    current: bool
    holders: tuple

    @classmethod
    def _from_pb(cls, resp) -> "Check":
        return cls(resp.current, tuple(Holder._from_pb(h) for h in resp.holders))

    def __bool__(self) -> bool:
        return self.current


# --- holds ------------------------------------------------------------------


class _Hold(_HoldState):
    """What Lock and Campaign share: acquire through a stream, renew in the
    background, watch the stream for the end of the hold, give it up on exit."""

    def __init__(self, client: "Client", key: str, ttl: float, timeout: Optional[float], renew: bool):
        super().__init__(client, key, ttl, timeout, renew)
        self._ended = threading.Event()
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._renewer: Optional[threading.Thread] = None

    # subclasses: open the stream, give up the hold
    def _open(self):
        raise NotImplementedError

    def _give_up(self):
        raise NotImplementedError

    def acquire(self) -> "_Hold":
        if self._held:
            raise RuntimeError("already acquired")
        call = self._open()
        self._call = call
        try:
            for ev in call:
                if self._take_acquire_event(ev):
                    break
            else:
                raise self._closed_before_acquisition()
        except grpc.RpcError as e:
            call.cancel()
            raise _wrap(e, f"acquire {self.key!r}") from None
        except BaseException:
            # KeyboardInterrupt and the like: withdraw the request.
            call.cancel()
            raise
        self._held = True
        self._lost = False
        self._ended.clear()
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name=f"baton-watch-{self.key}", daemon=True)
        self._watcher.start()
        if self._auto_renew and self._ttl_ms > 0:
            self._renewer = threading.Thread(target=self._renew_loop, name=f"baton-renew-{self.key}", daemon=True)
            self._renewer.start()
        return self

    def _mark_lost(self, why: str) -> None:
        if not self._stop.is_set():
            self._lost = True
            log.warning("baton: hold on %r (index %s) lost: %s", self.key, self.index, why)
        self._ended.set()

    def _watch(self):
        """Reads the rest of the stream: its `ended` event (or its closing) means the hold is over."""
        why = "the stream closed"
        try:
            for ev in self._call:
                reason = _end_reason(ev)
                if reason is not None:
                    why = reason
                    break
        except grpc.RpcError as e:
            why = f"the stream failed: {e.code().name}"
        self._mark_lost(why)

    def renew(self, ttl: Optional[float] = None) -> None:
        """Resets the hold's deadline to now + ttl (default: the ttl it was acquired with)."""
        req = self._renew_request(ttl)
        try:
            resp = self._client._lock.Renew(req, timeout=self._client.rpc_timeout)
        except grpc.RpcError as e:
            raise _wrap(e, f"renew {self.key!r} index {self.index}") from None
        self.deadline_unix_ms = resp.deadline_unix_ms

    def _renew_loop(self):
        interval = self._ttl_ms / 3000.0
        while not self._stop.wait(interval):
            if self._ended.is_set():
                return
            try:
                self.renew()
            except NotFound:
                self._mark_lost("renew found no entry")
                return
            except BatonError as e:  # maybe transient: try again next round
                log.warning("baton: renewing %r failed: %s", self.key, e)

    def release(self) -> None:
        """Gives the hold up. Does nothing if it is not held; a hold that was
        lost meanwhile is not an error (check `.lost`)."""
        if not self._held:
            return
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        try:
            if not self._ended.is_set():
                self._give_up()
        except NotFound:
            pass  # it expired or was released by someone else meanwhile
        finally:
            self._held = False
            if self._call is not None:
                self._call.cancel()
            if self._watcher is not None and self._watcher is not threading.current_thread():
                self._watcher.join(timeout=self._client.rpc_timeout)
            self._watcher = self._renewer = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.release()
        except BatonError:
            if exc_type is None:
                raise
            log.exception("baton: releasing %r failed while handling another error", self.key)
        return False


class Lock(_Hold):
    """A held (or to-be-held) lock. Use as a context manager, or acquire()/release()."""

    def __init__(self, client, key, ttl, value, timeout, renew, limit=1, lock_delay=0.0):
        super().__init__(client, key, ttl, timeout, renew)
        self.value = value
        self.limit = limit
        self._lock_delay_ms = _ms(lock_delay, "lock_delay")

    def _open(self):
        req = _wait_request(self.key, self.value, self._ttl_ms, self._timeout_ms, self.limit, self._lock_delay_ms)
        return self._client._lock.Wait(req)

    def _give_up(self):
        try:
            self._client._lock.Release(
                lock_pb2.ReleaseRequest(key=self.key, index=self.index), timeout=self._client.rpc_timeout
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"release {self.key!r} index {self.index}") from None


class Campaign(_Hold):
    """A candidacy. Entering the context waits until elected; leaving it resigns."""

    _event_field = "elected"

    def __init__(self, client, election, name, ttl, timeout, renew, lock_delay=0.0):
        if not name:
            raise ValueError("a candidate needs a non-empty name")
        super().__init__(client, election, ttl, timeout, renew)
        self.election = election
        self.name = name
        self._lock_delay_ms = _ms(lock_delay, "lock_delay")

    def _open(self):
        req = _campaign_request(self.election, self.name, self._ttl_ms, self._timeout_ms, self._lock_delay_ms)
        return self._client._election.Campaign(req)

    def _give_up(self):
        try:
            self._client._election.Resign(
                election_pb2.ResignRequest(election=self.election, name=self.name),
                timeout=self._client.rpc_timeout,
            )
        except grpc.RpcError as e:
            raise _wrap(e, f"resign {self.name!r} from {self.election!r}") from None

    resign = _Hold.release


# --- client -----------------------------------------------------------------


class Client:
    """A connection to a baton server.

    `target` is host:port, plaintext unless `credentials` are given (for a
    baton started with --tls-cert-file, e.g.
    `grpc.ssl_channel_credentials(root_certificates=open("ca.pem", "rb").read())`).
    `https://host:port` means TLS with the system's roots when no
    `credentials` are given. `token` is sent with every call as
    `authorization: Bearer TOKEN`, for a baton started with --auth-file.
    The raw generated stubs are available as `client.lock_stub` and
    `client.election_stub` (they send the token too).
    """

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
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, credentials)
        self._raw_channel = self._channel
        if token:
            self._channel = grpc.intercept_channel(self._channel, _Token(token))
        self._lock = lock_pb2_grpc.LockStub(self._channel)
        self._election = election_pb2_grpc.ElectionStub(self._channel)

    @property
    def lock_stub(self) -> lock_pb2_grpc.LockStub:
        return self._lock

    @property
    def election_stub(self) -> election_pb2_grpc.ElectionStub:
        return self._election

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # locks

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
    ) -> Lock:
        """A lock on `key`, acquired on `with` entry (or `.acquire()`).

        ttl: seconds the hold lasts without a renew (0 = forever). The hold is
        renewed every ttl/3 while held unless renew=False.
        value: optional; requests with the same non-empty value share one entry.
        timeout: None waits forever, 0 only takes a free lock, N waits N seconds;
        raises LockTimeout when it gives up.
        limit: up to this many holders at once (a semaphore); the key's first
        entry fixes it, another limit raises LimitMismatch.
        lock_delay: seconds nobody else is granted the key after this hold
        expires (not after a release), so in-flight writes drain first.
        """
        return Lock(self, key, ttl, value, timeout, renew, limit, lock_delay)

    def check(self, key: str, index: int) -> Check:
        """Whether `index` (a fencing token) holds `key` now; a resource asks
        before it applies a write. Truthy when current."""
        try:
            resp = self._lock.Check(lock_pb2.CheckRequest(key=key, index=index), timeout=self.rpc_timeout)
        except grpc.RpcError as e:
            raise _wrap(e, f"check {key!r} index {index}") from None
        return Check._from_pb(resp)

    def get(self, key: str):
        """The raw GetResponse for `key`: holder (if any) and queue."""
        try:
            return self._lock.Get(lock_pb2.GetRequest(key=key), timeout=self.rpc_timeout)
        except grpc.RpcError as e:
            raise _wrap(e, f"get {key!r}") from None

    # elections

    def campaign(
        self,
        election: str,
        name: str,
        ttl: float = 30.0,
        timeout: Optional[float] = None,
        *,
        renew: bool = True,
        lock_delay: float = 0.0,
    ) -> Campaign:
        """A candidacy of `name` in `election`; `with` waits until elected and
        resigns on exit. Same ttl/timeout/renew/lock_delay rules as lock()."""
        return Campaign(self, election, name, ttl, timeout, renew, lock_delay)

    def leader(self, election: str) -> Optional[Leader]:
        """The current leader, or None."""
        try:
            resp = self._election.Leader(election_pb2.LeaderRequest(election=election), timeout=self.rpc_timeout)
        except grpc.RpcError as e:
            raise _wrap(e, f"leader of {election!r}") from None
        return Leader._from_pb(resp)

    def observe(self, election: str) -> "Observation":
        """Iterates over the current leader (or None), then every change of
        leader, until `.close()` is called (from any thread) or the `with`
        block ends."""
        return Observation(self._election.Observe(election_pb2.ObserveRequest(election=election)), election)


class Observation:
    """An open Observe stream: iterate it for Optional[Leader] values; close() ends it."""

    def __init__(self, call, election: str):
        self._call = call
        self.election = election
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self) -> Optional[Leader]:
        try:
            return Leader._from_pb(next(self._call))
        except grpc.RpcError as e:
            if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise _wrap(e, f"observe {self.election!r}") from None

    def close(self) -> None:
        self._closed = True
        self._call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
