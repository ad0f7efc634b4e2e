"""The asyncio client (baton_client.aio) against a real baton: the same
guards as the blocking one. Each test runs its coroutine with asyncio.run."""

import asyncio

import pytest

from baton_client import LimitMismatch, LockTimeout
from baton_client.aio import AsyncClient

WAIT = 20.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_async_with_lock_holds_and_releases(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            async with client.lock(key, ttl=10, value="a") as lock:
                assert lock.index > 0 and lock.held
                resp = await client.get(key)
                assert resp.holder.index == lock.index
                assert (await client.check(key, lock.index)).current
            assert not (await client.get(key)).HasField("holder")
            assert not (await client.check(key, lock.index)).current

    run(body())


def test_waiters_acquire_in_turn(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            order = []

            async def worker(n):
                async with client.lock(key, ttl=10, timeout=WAIT) as lock:
                    order.append((n, lock.index))
                    await asyncio.sleep(0.05)

            first = await client.lock(key, ttl=10).acquire()
            tasks = []
            for n in range(3):
                tasks.append(asyncio.ensure_future(worker(n)))
                # Queue them in a known order.
                for _ in range(200):
                    if len((await client.get(key)).queue) == n + 1:
                        break
                    await asyncio.sleep(0.01)
            await first.release()
            await asyncio.gather(*tasks)
            assert [n for n, _ in order] == [0, 1, 2]
            indexes = [i for _, i in order]
            assert indexes == sorted(indexes)

    run(body())


def test_timeout_zero_and_limit_mismatch(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            async with client.lock(key, ttl=10, limit=2):
                async with client.lock(key, ttl=10, limit=2):
                    with pytest.raises(LockTimeout):
                        await client.lock(key, limit=2, timeout=0).acquire()
                    with pytest.raises(LimitMismatch):
                        await client.lock(key, limit=1, timeout=0).acquire()
                    assert len((await client.get(key)).queue) == 0

    run(body())


def test_cancelling_a_wait_withdraws_the_request(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            async with client.lock(key, ttl=10):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.lock(key, ttl=10).acquire(), timeout=0.5)
                for _ in range(200):
                    if len((await client.get(key)).queue) == 0:
                        break
                    await asyncio.sleep(0.02)
                assert len((await client.get(key)).queue) == 0

    run(body())


def test_lost_turns_true_when_someone_else_releases(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            lock = await client.lock(key, ttl=10).acquire()
            from baton_client._pb.baton.v1 import lock_pb2

            await client._lock.Release(lock_pb2.ReleaseRequest(key=key, index=lock.index))
            await asyncio.wait_for(lock.wait_lost(), timeout=WAIT)
            assert lock.lost and not lock.held
            await lock.release()  # not an error

    run(body())


def test_renewal_keeps_a_short_lock(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            async with client.lock(key, ttl=0.6) as lock:
                await asyncio.sleep(1.5)
                assert lock.held and not lock.lost
                assert (await client.check(key, lock.index)).current

    run(body())


def test_async_campaign_and_leader(baton_target, key):
    async def body():
        async with AsyncClient(baton_target) as client:
            async with client.campaign(key, "node-1", ttl=10, lock_delay=1) as c:
                leader = await client.leader(key)
                assert (leader.name, leader.index) == ("node-1", c.index)
            assert await client.leader(key) is None

    run(body())
