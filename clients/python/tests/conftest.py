"""Starts a real baton (`--memory`, port 0) for the test session.

The binary is $BATON_BIN, or <repo>/target/debug/baton. A missing binary is a
test failure, not a skip.
"""

import os
import pathlib
import re
import subprocess
import threading
import uuid

import pytest

from baton_client import Client

REPO = pathlib.Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"^baton listening on http://(127\.0\.0\.1:\d+)$")


def _binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("BATON_BIN") or REPO / "target" / "debug" / "baton")
    if not path.is_absolute():
        path = REPO / path
    return path


@pytest.fixture(scope="session")
def baton_target(tmp_path_factory):
    binary = _binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"baton binary not found at {binary}: run `cargo build --bins` or set BATON_BIN", pytrace=False)
    log_path = tmp_path_factory.mktemp("baton") / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(binary), "--memory", "--listen", "127.0.0.1:0"],
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


@pytest.fixture
def client(baton_target):
    with Client(baton_target) as c:
        yield c


@pytest.fixture
def key(request):
    """A key no other test uses."""
    return f"py/{request.node.name}/{uuid.uuid4().hex[:8]}"
