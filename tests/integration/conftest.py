"""Shared fixtures for integration tests: one moto server on 127.0.0.1 for the whole session."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL ("http://127.0.0.1:<port>") of a moto server running for the session.

    Fake credentials and us-east-1 are set in os.environ for the session, so a client built
    with endpoint_url=moto_server can never sign a request for a real account. The server's
    state is shared by every test: name resources per test (a prefix), or reset it with
    POST {endpoint}/moto-api/reset.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        # werkzeug logs every request at INFO; failures show up in the tests' own assertions.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
