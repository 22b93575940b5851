"""Retry policy, response classes and the outbox, with an injected clock: nothing sleeps, nothing connects."""

from __future__ import annotations

import logging
from pathlib import Path
from unittest import mock

import pytest
import requests

from gpulse.wire import signing
from node_shipper.errors import ConfigError
from node_shipper.outbox import Outbox
from node_shipper.retry import Backoff, parse_retry_after
from node_shipper.sender import Sender, SendResult, Verdict
from node_shipper.spool import Spool

T0 = 1_770_000_000.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- Backoff --------------------------------------------------------------------------------------


def test_backoff_doubles_then_caps() -> None:
    clock = Clock()
    backoff = Backoff(base_s=1.0, cap_s=60.0, clock=clock, jitter=lambda: 1.0)
    assert [backoff.failed() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_jitter_keeps_at_least_half_the_wait() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, clock=Clock(), jitter=lambda: 0.0)
    assert [backoff.failed() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_ready_follows_the_clock() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, jitter=lambda: 1.0)
    assert backoff.ready()
    backoff.failed()
    backoff.failed()
    assert not backoff.ready() and backoff.wait_s() == 2.0
    clock.now += 1.999
    assert not backoff.ready()
    clock.now += 0.001
    assert backoff.ready() and backoff.wait_s() == 0.0


def test_retry_after_replaces_the_backoff() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, jitter=lambda: 1.0)
    assert backoff.failed(retry_after_s=7.0) == 7.0
    clock.now += 6.9
    assert not backoff.ready()
    clock.now += 0.1
    assert backoff.ready()
    assert backoff.failed(retry_after_s=0.0) == 0.0 and backoff.ready()


def test_success_starts_the_sequence_again() -> None:
    backoff = Backoff(clock=Clock(), jitter=lambda: 1.0)
    for _ in range(5):
        backoff.failed()
    backoff.succeeded()
    assert backoff.ready() and backoff.failures == 0
    assert backoff.failed() == 1.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("-3", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


# -- Sender: the HTTP answer → a verdict -----------------------------------------------------------


def _response(status: int, text: str = "", headers: dict[str, str] | None = None) -> requests.Response:
    response = mock.create_autospec(requests.Response, instance=True)
    response.status_code = status
    response.text = text
    response.headers = requests.structures.CaseInsensitiveDict(headers or {})
    return response


def _sender(answer: requests.Response | Exception) -> tuple[Sender, mock.MagicMock]:
    session = mock.create_autospec(requests.Session, instance=True)
    if isinstance(answer, Exception):
        session.post.side_effect = answer
    else:
        session.post.return_value = answer
    sender = Sender(
        session=session,
        endpoint="https://api.example/",
        cluster="c1",
        node="n1",
        secret=b"s3cret",
        clock=lambda: T0,
    )
    return sender, session


def test_post_is_signed_at_send_time() -> None:
    sender, session = _sender(_response(200))
    assert sender.send(b"\x1f\x8bbody") == SendResult(Verdict.SENT, 200)
    (url,), kwargs = session.post.call_args
    assert url == "https://api.example/v1/batches"
    headers = kwargs["headers"]
    assert (headers["Content-Encoding"], headers["X-Gpulse-Node"], headers["X-Gpulse-Timestamp"]) == (
        "gzip",
        "c1/n1",
        str(int(T0)),
    )
    signing.verify(b"s3cret", int(T0), b"\x1f\x8bbody", headers["X-Gpulse-Signature"])
    assert kwargs["data"] == b"\x1f\x8bbody" and kwargs["allow_redirects"] is False


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (_response(202), SendResult(Verdict.SENT, 202)),
        (_response(503, "busy", {"Retry-After": "3"}), SendResult(Verdict.RETRY, 503, 3.0, "busy")),
        (_response(429, "slow down", {"Retry-After": "1"}), SendResult(Verdict.RETRY, 429, 1.0, "slow down")),
        (_response(500, "oops", {"Retry-After": "9"}), SendResult(Verdict.RETRY, 500, None, "oops")),
        (_response(502), SendResult(Verdict.RETRY, 502, None, "")),
        (
            _response(400, '{"message":"timestamps must be strictly increasing"}'),
            SendResult(Verdict.DROP, 400, None, '{"message":"timestamps must be strictly increasing"}'),
        ),
        (_response(401, "bad signature"), SendResult(Verdict.AUTH, 401, None, "bad signature")),
        (_response(403, "Forbidden"), SendResult(Verdict.AUTH, 403, None, "Forbidden")),
        # 404/405: the endpoint is wrong (an upgraded stack, a path given twice), not the data
        (_response(404, "x" * 1000), SendResult(Verdict.MISROUTED, 404, None, "x" * 300)),  # bounded
        (_response(405, "POST only"), SendResult(Verdict.MISROUTED, 405, None, "POST only")),
        (_response(410, "gone"), SendResult(Verdict.DROP, 410, None, "gone")),
        (_response(413, "too big"), SendResult(Verdict.DROP, 413, None, "too big")),
        (_response(301), SendResult(Verdict.RETRY, 301, None, "unexpected HTTP 301; check --endpoint")),
    ],
)
def test_verdicts(response: requests.Response, expected: SendResult) -> None:
    sender, _ = _sender(response)
    assert sender.send(b"x") == expected


@pytest.mark.parametrize("error", [requests.ConnectionError("refused"), requests.Timeout("slow")])
def test_network_errors_are_retried(error: Exception) -> None:
    sender, _ = _sender(error)
    result = sender.send(b"x")
    assert (result.verdict, result.status) == (Verdict.RETRY, None)


def test_timeout_is_bounded_by_the_deadline() -> None:
    sender, session = _sender(_response(200))
    sender.send(b"x", timeout_s=1.5)
    assert session.post.call_args.kwargs["timeout"] == (1.5, 1.5)
    sender.send(b"x")
    assert session.post.call_args.kwargs["timeout"] == (3.05, 10.0)


# -- Outbox: send now, or spool and retry oldest first ---------------------------------------------


def _outbox(tmp_path: Path, answers: list[SendResult]) -> tuple[Outbox, mock.MagicMock, Clock]:
    clock = Clock()
    sender = mock.create_autospec(Sender, instance=True)
    sender.send.side_effect = answers
    sender.reload_secret.return_value = False
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=lambda: T0)
    backoff = Backoff(clock=clock, jitter=lambda: 1.0)
    return Outbox(node="n1", spool=spool, sender=sender, backoff=backoff, monotonic=clock), sender, clock


def _sent(sender: mock.MagicMock) -> list[bytes]:
    return [c.args[0] for c in sender.send.call_args_list]


def test_sent_at_once_when_nothing_waits(tmp_path: Path) -> None:
    outbox, sender, _ = _outbox(tmp_path, [SendResult(Verdict.SENT, 200)])
    outbox.offer(b"a", first_ts=T0, seq=0)
    assert _sent(sender) == [b"a"] and outbox.pending == 0 and outbox.stats.sent == 1


def test_503_then_200_retries_in_order_after_the_backoff(tmp_path: Path) -> None:
    outbox, sender, clock = _outbox(
        tmp_path,
        [SendResult(Verdict.RETRY, 503), SendResult(Verdict.SENT, 200), SendResult(Verdict.SENT, 200)],
    )
    outbox.offer(b"a", first_ts=T0, seq=0)
    outbox.offer(b"b", first_ts=T0 + 10, seq=1)  # waits behind "a", not sent out of order
    assert _sent(sender) == [b"a"] and outbox.pending == 2
    outbox.pump()
    assert _sent(sender) == [b"a"]  # the backoff (1 s) has not passed
    clock.now += 1.0
    outbox.pump()
    assert _sent(sender) == [b"a", b"a", b"b"] and outbox.pending == 0
    assert (outbox.stats.sent, outbox.stats.spooled, outbox.stats.dropped) == (2, 2, 0)


def test_429_honours_retry_after(tmp_path: Path) -> None:
    outbox, sender, clock = _outbox(
        tmp_path, [SendResult(Verdict.RETRY, 429, 30.0), SendResult(Verdict.SENT, 200)]
    )
    outbox.offer(b"a", first_ts=T0, seq=0)
    clock.now += 29.9
    outbox.pump()
    assert _sent(sender) == [b"a"]
    clock.now += 0.1
    outbox.pump()
    assert _sent(sender) == [b"a", b"a"] and outbox.pending == 0


def test_4xx_is_dropped_with_the_server_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox, sender, clock = _outbox(
        tmp_path,
        [
            SendResult(Verdict.DROP, 400, None, "schema: data.seq must be integer"),
            SendResult(Verdict.SENT, 200),
        ],
    )
    with caplog.at_level(logging.ERROR):
        outbox.offer(b"bad", first_ts=T0, seq=0)
    outbox.offer(b"good", first_ts=T0 + 10, seq=1)
    clock.now += 3600
    outbox.pump()
    assert _sent(sender) == [b"bad", b"good"]  # exactly one try for the refused batch
    assert outbox.pending == 0 and outbox.stats.dropped == 1 and outbox.stats.by_reason == {"refused": 1}
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [record.__dict__[k] for k in ("msg", "seq", "reason", "status", "response")] == [
        "batch dropped",
        0,
        "refused",
        400,
        "schema: data.seq must be integer",
    ]


def test_a_refused_spooled_batch_is_removed_and_the_next_goes(tmp_path: Path) -> None:
    outbox, sender, clock = _outbox(
        tmp_path,
        [
            SendResult(Verdict.RETRY, None),
            SendResult(Verdict.DROP, 413, None, "too large"),
            SendResult(Verdict.SENT, 200),
        ],
    )
    outbox.offer(b"a", first_ts=T0, seq=0)
    outbox.offer(b"b", first_ts=T0 + 1, seq=1)
    clock.now += 1
    outbox.pump()
    assert _sent(sender) == [b"a", b"a", b"b"] and outbox.pending == 0


def test_pump_stops_at_the_deadline(tmp_path: Path) -> None:
    outbox, sender, clock = _outbox(tmp_path, [SendResult(Verdict.RETRY, 503)])
    outbox.offer(b"a", first_ts=T0, seq=0)
    clock.now += 5
    outbox.pump(deadline=clock.now)
    assert _sent(sender) == [b"a"] and outbox.pending == 1


def test_the_secret_is_read_again_on_demand() -> None:
    secrets = [b"new", b"new"]
    session = mock.create_autospec(requests.Session, instance=True)
    session.post.return_value = _response(200)
    sender = Sender(
        session=session,
        endpoint="https://api.example",
        cluster="c1",
        node="n1",
        secret=b"old",
        secret_loader=lambda: secrets.pop(0),
        clock=lambda: T0,
    )
    assert sender.reload_secret() is True
    assert sender.reload_secret() is False  # the same again: no change
    sender.send(b"x")
    signing.verify(b"new", int(T0), b"x", session.post.call_args.kwargs["headers"]["X-Gpulse-Signature"])


def test_an_unreadable_secret_file_keeps_the_old_secret(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> bytes:
        raise ConfigError("cannot read secret file /etc/gpulse/secret: Permission denied")

    session = mock.create_autospec(requests.Session, instance=True)
    session.post.return_value = _response(200)
    sender = Sender(
        session=session,
        endpoint="https://api.example",
        cluster="c1",
        node="n1",
        secret=b"old",
        secret_loader=broken,
        clock=lambda: T0,
    )
    with caplog.at_level(logging.WARNING):
        assert sender.reload_secret() is False
    sender.send(b"x")
    signing.verify(b"old", int(T0), b"x", session.post.call_args.kwargs["headers"]["X-Gpulse-Signature"])
    assert [r.getMessage() for r in caplog.records] == ["secret not re-read"]
    assert "old" not in caplog.text
