"""baton_client with a token, against a baton started with --auth-file
(see conftest.py's auth_baton)."""

import pytest

from baton_client import Client, PermissionDenied, Unauthenticated

from conftest import AUTH_TOKENS


def test_without_a_token_calls_are_refused(auth_baton):
    with Client(auth_baton) as c:
        with pytest.raises(Unauthenticated):
            c.get("py/auth")
        with pytest.raises(Unauthenticated):
            with c.lock("py/auth", ttl=5):
                pass


def test_a_wrong_token_is_refused(auth_baton):
    with Client(auth_baton, token="not-a-token-0000000000") as c:
        with pytest.raises(Unauthenticated):
            c.get("py/auth")


def test_a_token_locks_within_its_prefixes(auth_baton):
    with Client(auth_baton, token=AUTH_TOKENS["deployer"]) as c:
        with c.lock("py/auth", ttl=10) as held:
            assert held.index > 0
            with Client(auth_baton, token=AUTH_TOKENS["reader"]) as reader:
                assert reader.get("py/auth").holder.index == held.index
        with pytest.raises(PermissionDenied):
            c.get("elsewhere/auth")
        with pytest.raises(PermissionDenied):
            with c.campaign("elsewhere/election", "me", ttl=5):
                pass


def test_a_read_only_token_cannot_lock(auth_baton):
    with Client(auth_baton, token=AUTH_TOKENS["reader"]) as c:
        with pytest.raises(PermissionDenied):
            with c.lock("py/auth-ro", ttl=5):
                pass
        assert not c.get("py/auth-ro").HasField("holder")
