"""baton_client against a baton serving TLS with a throw-away CA (see
conftest.py's tls_baton)."""

import grpc
import pytest

from baton_client import BatonError, Client


def test_locks_over_tls_with_the_ca(tls_baton):
    target, ca = tls_baton
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    with Client(target, credentials=creds) as c:
        with c.lock("py/tls", ttl=10) as held:
            assert held.index > 0
            assert c.get("py/tls").holder.index == held.index
        assert not c.get("py/tls").HasField("holder")


def test_plaintext_to_a_tls_port_fails(tls_baton):
    target, _ = tls_baton
    with Client(target, rpc_timeout=5) as c:
        with pytest.raises(BatonError):
            c.get("py/tls")


def test_https_without_the_ca_is_refused(tls_baton):
    target, _ = tls_baton
    with Client(f"https://{target}", rpc_timeout=5) as c:
        with pytest.raises(BatonError):
            c.get("py/tls")
