"""Semaphores, lock-delay and fencing-token checks through the blocking client."""

import time

import pytest

from baton_client import LimitMismatch, LockTimeout

WAIT = 20.0


def test_a_semaphore_admits_up_to_its_limit(client, key):
    with client.lock(key, ttl=10, limit=2) as a, client.lock(key, ttl=10, limit=2) as b:
        assert a.index != b.index
        resp = client.get(key)
        assert [h.index for h in resp.holders] == [a.index, b.index]
        assert resp.limit == 2
        with pytest.raises(LockTimeout):
            client.lock(key, limit=2, timeout=0).acquire()
        with pytest.raises(LimitMismatch) as e:
            client.lock(key, limit=3, timeout=0).acquire()
        assert "limit 2" in e.value.details
        assert client.check(key, a.index)
        assert client.check(key, b.index).current
    check = client.check(key, a.index)
    assert not check and check.holders == ()


def test_check_reports_the_holders(client, key):
    with client.lock(key, ttl=10, value="w1") as lock:
        check = client.check(key, lock.index)
        assert check.current
        assert [(h.index, h.value) for h in check.holders] == [(lock.index, "w1")]
        assert not client.check(key, lock.index + 1000).current


def test_a_lock_delay_holds_off_the_next_holder_after_an_expiry(client, key):
    first = client.lock(key, ttl=0.3, lock_delay=1.0, renew=False).acquire()
    assert client.get(key).holders[0].lock_delay_ms == 1000
    until = first.deadline_unix_ms + 1000
    with client.lock(key, ttl=10, timeout=WAIT) as second:
        granted = second.deadline_unix_ms - 10_000
        assert granted >= until, f"granted {until - granted} ms inside the delay"
    assert first.lost or not first.held
    first.release()


def test_a_release_ends_a_hold_without_delay(client, key):
    first = client.lock(key, ttl=10, lock_delay=30).acquire()
    first.release()
    start = time.monotonic()
    with client.lock(key, ttl=10, timeout=0):
        pass
    assert time.monotonic() - start < 5
