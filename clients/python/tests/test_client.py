"""baton_client against a real baton process (see conftest.py).

Timing margins are generous: these run on a 2-core machine next to a build.
"""

import queue
import threading
import time

import grpc
import pytest

from baton_client import BatonError, Client, Leader, LockAborted, LockTimeout, NotFound
from baton_client._pb.baton.v1 import lock_pb2

WAIT = 20.0  # upper bound for anything that should happen "soon"


def holder(client, key):
    resp = client.get(key)
    return resp.holder if resp.HasField("holder") else None


def wait_until(pred, timeout=WAIT, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def run_in_thread(fn):
    """Runs fn in a daemon thread; returns (thread, result queue) where the
    queue gets ("ok", value) or ("err", exception)."""
    out = queue.Queue()

    def body():
        try:
            out.put(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out.put(("err", e))

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


# --- locks ------------------------------------------------------------------


def test_acquire_and_release(client, key):
    assert holder(client, key) is None
    with client.lock(key, ttl=10, value="alice") as lock:
        assert lock.index > 0
        assert lock.held and not lock.lost
        h = holder(client, key)
        assert h is not None
        assert (h.index, h.value, h.ttl_ms) == (lock.index, "alice", 10_000)
        assert 0 < h.remaining_ms <= 10_000
    assert not lock.held and not lock.lost
    assert holder(client, key) is None
    assert len(client.get(key).queue) == 0


def test_acquire_release_without_with(client, key):
    lock = client.lock(key, ttl=10)
    lock.acquire()
    try:
        assert holder(client, key).index == lock.index
    finally:
        lock.release()
    assert holder(client, key) is None
    lock.release()  # a second release is a no-op


def test_fencing_index_increases(client, key):
    indexes = []
    for i in range(3):
        with client.lock(key, ttl=10) as lock:
            indexes.append(lock.index)
        with client.lock(key + "/other", ttl=10) as other:
            indexes.append(other.index)
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == len(indexes), indexes


def test_second_locker_blocks_until_first_releases(client, baton_target, key):
    events = []
    first = client.lock(key, ttl=30, value="first")
    first.acquire()
    second_acquired = threading.Event()
    release_second = threading.Event()

    def second():
        with Client(baton_target) as c2, c2.lock(key, ttl=30, value="second") as lock:
            events.append(("second acquired", lock.index))
            second_acquired.set()
            assert release_second.wait(WAIT)
            return lock.index

    t, out = run_in_thread(second)
    try:
        # the second request is queued behind the first, and stays queued
        assert wait_until(lambda: len(client.get(key).queue) == 1), "second request never queued"
        q = client.get(key).queue[0]
        assert q.value == "second" and q.index > first.index
        assert not second_acquired.wait(1.5), "second locker acquired while the first held the lock"
        assert holder(client, key).index == first.index
        events.append(("first releases", first.index))
        first.release()
        assert second_acquired.wait(WAIT), "second locker did not acquire after the first released"
        h = holder(client, key)
        assert h.value == "second" and h.index == q.index
    finally:
        first.release()
        release_second.set()
        t.join(WAIT)
    kind, second_index = out.get(timeout=WAIT)
    assert kind == "ok", second_index
    assert second_index > first.index
    assert [e[0] for e in events] == ["first releases", "second acquired"]
    assert holder(client, key) is None


def test_timeout_raises(client, key):
    with client.lock(key, ttl=30) as lock:
        start = time.monotonic()
        with pytest.raises(LockTimeout) as err:
            with client.lock(key, ttl=5, timeout=0.5):
                pytest.fail("acquired a held lock")
        took = time.monotonic() - start
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert key in str(err.value)
        assert 0.4 <= took < 10, took
        assert isinstance(err.value, TimeoutError)

        # timeout=0: fail at once
        with pytest.raises(LockTimeout) as err0:
            client.lock(key, ttl=5, timeout=0).acquire()
        assert err0.value.code == grpc.StatusCode.FAILED_PRECONDITION

        # nothing left queued, and the holder is unchanged
        resp = client.get(key)
        assert resp.holder.index == lock.index
        assert len(resp.queue) == 0


def test_timeout_zero_on_a_free_lock_acquires(client, key):
    with client.lock(key, ttl=5, timeout=0) as lock:
        assert holder(client, key).index == lock.index


def test_renewal_keeps_a_short_ttl_lock_alive(client, key):
    ttl = 1.0
    with client.lock(key, ttl=ttl) as lock:
        time.sleep(4 * ttl)  # four ttls: it would have expired without renewal
        h = holder(client, key)
        assert h is not None and h.index == lock.index, "lock expired despite renewal"
        assert lock.held and not lock.lost
        assert h.remaining_ms <= 1000
    assert holder(client, key) is None


def test_without_renewal_a_short_ttl_lock_expires_and_is_reported_lost(client, key):
    # The control for the test above: the same lock without the renewer is gone
    # after its ttl, and the wrapper notices through the Wait stream.
    with client.lock(key, ttl=1.0, renew=False) as lock:
        assert wait_until(lambda: lock.lost, timeout=WAIT), "expiry was not noticed"
        assert holder(client, key) is None
        assert not lock.held
    assert lock.lost  # still reported after the with block


def test_release_by_someone_else_is_reported_lost(client, key):
    with client.lock(key, ttl=30) as lock:
        client.lock_stub.Release(lock_pb2.ReleaseRequest(key=key, index=lock.index))
        assert wait_until(lambda: lock.lost), "release by someone else was not noticed"
    # leaving the with block after losing the lock is not an error


def test_queued_request_released_by_someone_else_aborts(client, baton_target, key):
    with client.lock(key, ttl=30):

        def second():
            with Client(baton_target) as c2, c2.lock(key, ttl=30):
                pass

        t, out = run_in_thread(second)
        assert wait_until(lambda: len(client.get(key).queue) == 1)
        queued = client.get(key).queue[0].index
        client.lock_stub.Release(lock_pb2.ReleaseRequest(key=key, index=queued))
        kind, err = out.get(timeout=WAIT)
        t.join(WAIT)
        assert kind == "err" and isinstance(err, LockAborted), err


def test_same_value_joins_the_entry(client, baton_target, key):
    with client.lock(key, ttl=30):
        results = []
        threads = []
        for _ in range(2):
            def waiter():
                with Client(baton_target) as c2, c2.lock(key, ttl=30, value="shared") as lock:
                    return lock.index
            threads.append(run_in_thread(waiter))
        assert wait_until(lambda: len(client.get(key).queue) == 1 and client.get(key).queue[0].waiters == 2)
    for t, out in threads:
        kind, idx = out.get(timeout=WAIT)
        t.join(WAIT)
        assert kind == "ok", idx
        results.append(idx)
    assert results[0] == results[1]


def test_invalid_key(client):
    with pytest.raises(BatonError) as err:
        client.lock("", ttl=1).acquire()
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not isinstance(err.value, LockTimeout)
    with pytest.raises(ValueError):
        client.lock("x", ttl=-1)


def test_renew_of_unknown_entry_is_not_found(client, key):
    lock = client.lock(key, ttl=5)
    lock.acquire()
    lock.release()
    with pytest.raises(NotFound):
        lock.renew()


# --- elections --------------------------------------------------------------


def test_election_leader_and_resign(client, baton_target, key):
    election = key
    assert client.leader(election) is None
    elected_b = threading.Event()
    stop_b = threading.Event()

    def candidate_b():
        with Client(baton_target) as c2, c2.campaign(election, "b", ttl=30) as camp:
            elected_b.set()
            assert stop_b.wait(WAIT)
            return camp.index

    with client.campaign(election, "a", ttl=30) as a:
        assert a.index > 0
        leader = client.leader(election)
        assert isinstance(leader, Leader)
        assert (leader.name, leader.index, leader.ttl_ms) == ("a", a.index, 30_000)
        # elections and locks share names
        assert holder(client, election).value == "a"
        t, out = run_in_thread(candidate_b)
        assert wait_until(lambda: len(client.get(election).queue) == 1)
        assert not elected_b.wait(1.0), "b elected while a leads"
        assert client.leader(election).name == "a"
    # a resigned on exit: b leads at once
    try:
        assert elected_b.wait(WAIT), "b not elected after a resigned"
        leader = client.leader(election)
        assert leader.name == "b" and leader.index > a.index
    finally:
        stop_b.set()
        t.join(WAIT)
    kind, b_index = out.get(timeout=WAIT)
    assert kind == "ok", b_index
    assert b_index == leader.index
    assert client.leader(election) is None


def test_campaign_timeout_and_renewal(client, key):
    with client.campaign(key, "a", ttl=1.0) as a:
        with pytest.raises(LockTimeout):
            client.campaign(key, "b", ttl=1.0, timeout=0).acquire()
        time.sleep(3.5)  # beyond the ttl: the renewer keeps a leading
        assert client.leader(key).index == a.index
    assert client.leader(key) is None


def test_campaign_requires_a_name(client, key):
    with pytest.raises(ValueError):
        client.campaign(key, "")


def test_observe(client, baton_target, key):
    seen = []
    obs = client.observe(key)

    def collect():
        for leader in obs:
            seen.append(leader)
        return len(seen)

    t, out = run_in_thread(collect)
    try:
        assert wait_until(lambda: len(seen) >= 1), "Observe sent nothing"
        assert seen[0] is None
        time.sleep(0.3)
        with client.campaign(key, "a", ttl=30) as a:
            assert wait_until(lambda: len(seen) >= 2)
        assert wait_until(lambda: len(seen) >= 3)
    finally:
        obs.close()
        t.join(WAIT)
    kind, n = out.get(timeout=WAIT)
    assert kind == "ok", n  # close() ends the iteration quietly
    assert [x.name if x else None for x in seen] == [None, "a", None]
    assert seen[1].index == a.index
