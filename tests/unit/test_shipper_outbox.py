"""The outbox when the spool cannot take batches (live sending goes on), and a 401/403 that is held.

Injected clocks and an injected disk writer: nothing sleeps, nothing connects.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from unittest import mock

import pytest

from node_shipper.outbox import DropReason, Outbox
from node_shipper.retry import Backoff
from node_shipper.sender import Sender, SendResult, Verdict
from node_shipper.spool import Spool, SpoolState, atomic_write

T0 = 1_770_000_000.0
OK = SendResult(Verdict.SENT, 200)
DOWN = SendResult(Verdict.RETRY, 503, None, "busy")
AUTH = SendResult(Verdict.AUTH, 401, None, '{"message":"bad signature"}')


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Disk:
    """`atomic_write`, or ENOSPC while `full`."""

    def __init__(self) -> None:
        self.full = False

    def __call__(self, path: Path, data: bytes) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        atomic_write(path, data)


class Rig:
    def __init__(self, tmp_path: Path, *, spool: bool = True, memory_max_bytes: int = 1 << 20) -> None:
        self.wall = Clock(T0)
        self.mono = Clock(0.0)
        self.disk = Disk()
        self.sender = mock.create_autospec(Sender, instance=True)
        self.sender.reload_secret.return_value = False
        self.answers: list[SendResult] = []
        self.sender.send.side_effect = lambda body, timeout_s=None: self.answers.pop(0)
        self.drops: list[tuple[int, DropReason]] = []
        self.spool = (
            Spool(
                tmp_path,
                max_bytes=1 << 20,
                clock=self.wall,
                write=self.disk,
                probe_backoff=Backoff(base_s=5, cap_s=300, clock=self.mono, jitter=lambda: 1.0),
            )
            if spool
            else None
        )
        self.outbox = Outbox(
            node="n1",
            spool=self.spool,
            sender=self.sender,
            backoff=Backoff(clock=self.mono, jitter=lambda: 1.0),
            auth_hold_s=600.0,
            memory_max_bytes=memory_max_bytes,
            clock=self.wall,
            monotonic=self.mono,
            on_drop=lambda seq, why: self.drops.append((seq, why)),
        )

    def sent(self) -> list[bytes]:
        return [c.args[0] for c in self.sender.send.call_args_list]

    def tick(self, seconds: float) -> None:
        self.wall.now += seconds
        self.mono.now += seconds


def test_a_full_disk_never_stops_live_sending(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path)
    rig.disk.full = True
    rig.answers = [DOWN]
    with caplog.at_level(logging.WARNING):
        rig.outbox.offer(b"a", first_ts=T0, seq=0)  # ingest down and the disk full: kept in memory
        assert rig.outbox.spool_state is SpoolState.FULL and rig.outbox.in_memory == (0,)
        rig.answers = [OK, OK, OK]
        rig.tick(1.0)
        rig.outbox.pump()
        rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)  # ingest back, disk still full: sent live
        rig.tick(1.0)
        rig.outbox.offer(b"c", first_ts=T0 + 20, seq=2)
    assert rig.sent() == [b"a", b"a", b"b", b"c"]
    assert (rig.outbox.pending, rig.drops, rig.outbox.stats.sent) == (0, [], 3)
    spool_lines = [r.getMessage() for r in caplog.records if r.name == "node_shipper.spool"]
    assert spool_lines == ["spool cannot take batches: shipping without a spool until it can"]  # once


def test_memory_moves_to_the_spool_once_the_disk_frees(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.disk.full = True
    rig.answers = [DOWN]
    rig.outbox.offer(b"a", first_ts=T0, seq=0)
    rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)
    assert rig.outbox.in_memory == (0, 1) and rig.spool is not None and len(rig.spool) == 0
    rig.disk.full = False
    rig.answers = [DOWN]
    rig.tick(4.9)
    rig.outbox.pump()  # the post is due (1 s) and fails again; the probe (5 s) is not due yet
    assert rig.outbox.spool_state is SpoolState.FULL and rig.outbox.in_memory == (0, 1)
    rig.tick(0.1)
    rig.outbox.pump()  # the probe passes: memory goes to disk (the post waits for its backoff)
    assert rig.outbox.spool_state is SpoolState.OK
    assert (rig.outbox.in_memory, rig.spool.seqs) == ((), (0, 1))
    rig.answers = [OK, OK]
    rig.tick(10)
    rig.outbox.pump()
    assert rig.sent() == [b"a", b"a", b"a", b"b"] and rig.outbox.pending == 0 and rig.drops == []


def test_memory_is_bounded_and_says_what_it_dropped(tmp_path: Path) -> None:
    rig = Rig(tmp_path, memory_max_bytes=10)
    rig.disk.full = True
    rig.answers = [DOWN]
    for seq in range(4):
        rig.outbox.offer(bytes([seq]) * 4, first_ts=T0 + seq, seq=seq)
    assert rig.outbox.in_memory == (2, 3)
    assert rig.drops == [(0, DropReason.MEMORY_BOUND), (1, DropReason.MEMORY_BOUND)]


def test_without_a_spool_batches_wait_in_memory(tmp_path: Path) -> None:
    rig = Rig(tmp_path, spool=False)
    rig.answers = [DOWN, OK, OK]
    rig.outbox.offer(b"a", first_ts=T0, seq=0)
    rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)
    assert rig.outbox.spool_state is SpoolState.DISABLED and rig.outbox.in_memory == (0, 1)
    rig.tick(1.0)
    rig.outbox.pump()
    assert rig.sent() == [b"a", b"a", b"b"] and rig.outbox.pending == 0
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_stopping_with_batches_only_in_memory_says_which_are_lost(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.disk.full = True
    rig.answers = [DOWN]
    rig.outbox.offer(b"a", first_ts=T0, seq=0)
    rig.outbox.close()
    assert rig.drops == [(0, DropReason.STOPPED)]


def test_stopping_after_the_disk_freed_spools_memory_though_no_probe_was_due(tmp_path: Path) -> None:
    """The disk frees between two probes and the shipper stops then: the batches memory holds go to
    the spool (a probe at stop, whatever its backoff), none is lost."""
    rig = Rig(tmp_path)
    rig.disk.full = True
    rig.answers = [DOWN]
    rig.outbox.offer(b"a", first_ts=T0, seq=0)
    rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)
    rig.disk.full = False
    rig.tick(1.0)  # the probe is due in 5 s
    rig.outbox.close()
    assert rig.drops == []
    assert Spool(tmp_path, max_bytes=1 << 20).seqs == (0, 1)  # the next run finds them


def test_a_401_is_held_with_backoff_then_dropped_after_the_hold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.answers = [AUTH, AUTH, AUTH]
    with caplog.at_level(logging.WARNING):
        rig.outbox.offer(b"a", first_ts=T0, seq=0)
        rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)
        rig.tick(1.0)
        rig.outbox.pump()  # second 401: the backoff doubles
        assert rig.outbox.backoff.wait_s() == 2.0 and rig.outbox.pending == 2 and rig.drops == []
        rig.tick(600.0)  # the refusals have lasted 601 s > 600 s: each held batch gets a last try
        rig.answers = [AUTH, AUTH]
        rig.outbox.pump()
    assert rig.drops == [(0, DropReason.AUTH_HOLD_EXPIRED), (1, DropReason.AUTH_HOLD_EXPIRED)]
    assert rig.sent() == [b"a", b"a", b"a", b"b"] and rig.outbox.pending == 0
    assert rig.sender.reload_secret.call_count == 4  # re-read at every refusal
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said[0] == "ingest refused our signature: holding batches, re-reading the secret file"
    assert said.count(said[0]) == 1  # once per episode
    assert said[1:] == ["batch dropped", "batch dropped"]


def test_a_rotated_secret_delivers_the_held_batch(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.answers = [AUTH, OK, OK]
    rig.outbox.offer(b"a", first_ts=T0, seq=0)
    rig.tick(1.0)
    rig.outbox.pump()
    assert rig.sent() == [b"a", b"a"] and rig.outbox.pending == 0 and rig.drops == []
    rig.answers = [AUTH, OK]  # a second episode starts afresh: its own hold
    rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)
    rig.tick(599.0)
    rig.outbox.pump()
    assert rig.sent()[-2:] == [b"b", b"b"] and rig.drops == []


def test_a_changed_secret_is_tried_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sender.reload_secret.return_value = True
    rig.answers = [AUTH, OK]
    rig.outbox.offer(b"a", first_ts=T0, seq=0)
    rig.outbox.pump()  # no clock step: no backoff after a new secret
    assert rig.sent() == [b"a", b"a"] and rig.outbox.pending == 0


MISROUTED = SendResult(Verdict.MISROUTED, 404, None, '{"message":"Not Found"}')


def test_a_404_keeps_the_batch_with_backoff_and_says_once_what_to_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgraded stack without the shipper's route, or `--endpoint` with the path in it: the
    data is fine, so it stays in the spool (past the 401 hold too) until the endpoint answers."""
    rig = Rig(tmp_path)
    rig.sender.url = "https://x.lambda-url.eu-west-1.on.aws/v1/batches/v1/batches"
    rig.answers = [MISROUTED, MISROUTED]
    with caplog.at_level(logging.WARNING):
        rig.outbox.offer(b"a", first_ts=T0, seq=0)
        rig.outbox.offer(b"b", first_ts=T0 + 10, seq=1)
        rig.tick(1.0)
        rig.outbox.pump()  # second 404: the backoff doubles, nothing dropped
        assert rig.outbox.backoff.wait_s() == 2.0 and rig.outbox.pending == 2 and rig.drops == []
        rig.tick(3600.0)  # longer than any auth hold: still kept
        rig.answers = [MISROUTED]
        rig.outbox.pump()
        assert rig.outbox.pending == 2 and rig.drops == [] and rig.outbox.stats.dropped == 0
        rig.tick(3600.0)
        rig.answers = [OK, OK]  # the endpoint is fixed: both go, oldest first
        rig.outbox.pump()
    assert rig.sent() == [b"a", b"a", b"a", b"a", b"b"] and rig.outbox.pending == 0 and rig.drops == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "ingest has no such endpoint: holding batches until --endpoint is fixed"
    ]
    assert (errors[0].__dict__["status"], errors[0].__dict__["url"]) == (404, rig.sender.url)
    assert rig.sender.reload_secret.call_count == 0  # not a signature problem
