"""Starts a real baton (`--memory`, port 0) for the test session.

The binary is $BATON_BIN, or <repo>/target/debug/baton. A missing binary is a
test failure, not a skip.
"""

import contextlib
import os
import pathlib
import re
import subprocess
import threading
import uuid

import pytest

from baton_client import Client

REPO = pathlib.Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"^baton listening on https?://(127\.0\.0\.1:\d+)$")


def _binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("BATON_BIN") or REPO / "target" / "debug" / "baton")
    if not path.is_absolute():
        path = REPO / path
    return path


@contextlib.contextmanager
def _running_baton(log_dir, extra_args=()):
    """Starts `baton --memory --listen 127.0.0.1:0 EXTRA_ARGS`, yields the
    host:port it listens on, and stops it afterwards."""
    binary = _binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"baton binary not found at {binary}: run `cargo build --bins` or set BATON_BIN", pytrace=False)
    log_path = log_dir / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(binary), "--memory", "--listen", "127.0.0.1:0", *extra_args],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    found = {}
    ready = threading.Event()

    def read_stdout():
        # Reads the listening line, then keeps draining so the pipe never fills.
        for line in proc.stdout:
            m = LISTENING.match(line.strip())
            if m and not ready.is_set():
                found["target"] = m.group(1)
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        if not ready.wait(30) or "target" not in found:
            proc.kill()
            proc.wait(10)
            log.close()
            pytest.fail(
                f"baton did not print its listening line within 30 s; log:\n{log_path.read_text()}", pytrace=False
            )
        yield found["target"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        log.close()


@pytest.fixture(scope="session")
def baton_target(tmp_path_factory):
    with _running_baton(tmp_path_factory.mktemp("baton")) as target:
        yield target


def _make_certs(d: pathlib.Path) -> None:
    """A throw-away CA (ca.pem) and a server certificate for 127.0.0.1
    (server.pem, server.key), made with the openssl command."""

    def run(*args):
        try:
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
        except FileNotFoundError:
            pytest.fail("the TLS test needs the openssl command (scripts/install-test-deps.sh)", pytrace=False)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=python test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


@pytest.fixture(scope="session")
def tls_baton(tmp_path_factory):
    """A baton serving TLS: yields (host:port, the CA certificate as PEM bytes)."""
    d = tmp_path_factory.mktemp("baton-tls")
    _make_certs(d)
    args = ("--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"))
    with _running_baton(d, args) as target:
        yield target, (d / "ca.pem").read_bytes()


AUTH_TOKENS = {"deployer": "deployer-secret-0001", "reader": "reader-secret-000001"}


@pytest.fixture(scope="session")
def auth_baton(tmp_path_factory):
    """A baton with --auth-file: the deployer may read and write under py/,
    the reader may read everything. Yields host:port."""
    d = tmp_path_factory.mktemp("baton-auth")
    auth = d / "auth.toml"
    auth.write_text(
        f"""[[token]]
name = "deployer"
secret = "{AUTH_TOKENS['deployer']}"
prefixes = ["py/"]
rights = ["read", "write"]

[[token]]
name = "reader"
secret = "{AUTH_TOKENS['reader']}"
prefixes = [""]
rights = ["read"]
"""
    )
    auth.chmod(0o600)
    with _running_baton(d, ("--auth-file", str(auth))) as target:
        yield target


@pytest.fixture
def client(baton_target):
    with Client(baton_target) as c:
        yield c


@pytest.fixture
def key(request):
    """A key no other test uses."""
    return f"py/{request.node.name}/{uuid.uuid4().hex[:8]}"
