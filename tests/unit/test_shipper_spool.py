"""The disk spool: bounded (oldest dropped), crash-safe, survives restarts, drops what ingest would refuse;
a full or unwritable disk is a state (said once, re-probed on a backoff), never an exit; seq rules."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import pytest

from node_shipper.errors import SpoolBusy, SpoolUnavailable
from node_shipper.retry import Backoff
from node_shipper.spool import (
    DEFAULT_MAX_AGE_S,
    MAX_SEQ,
    SEQ_FILE,
    SeqStore,
    Spool,
    SpoolState,
    atomic_write,
    clock_seed,
)

T0 = 1_770_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _bodies(spool: Spool) -> list[bytes]:
    out = []
    while (head := spool.oldest()) is not None:
        entry, body = head
        out.append(body)
        spool.remove(entry)
    return out


def test_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=Clock(T0))
    spool.put(b"second", first_ts=T0 - 10, seq=2)
    spool.put(b"first", first_ts=T0 - 20, seq=1)
    spool.put(b"third", first_ts=T0 - 5, seq=3)
    assert len(spool) == 3 and spool.size_bytes == len(b"secondfirstthird")
    assert _bodies(spool) == [b"first", b"second", b"third"]
    assert len(spool) == 0 and spool.size_bytes == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_bounded_drops_the_oldest_and_says_how_many(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, max_bytes=300, clock=Clock(T0), label="node-01")
    for seq in range(3):
        spool.put(bytes([seq]) * 100, first_ts=T0 + seq, seq=seq)
    assert len(spool) == 3  # exactly at the bound: nothing dropped
    with caplog.at_level(logging.WARNING):
        spool.put(b"x" * 150, first_ts=T0 + 3, seq=3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.getMessage(), r.__dict__["dropped"], r.__dict__["spool"]) for r in warnings] == [
        ("spool full: dropped oldest batches", 2, "node-01")
    ]
    assert spool.size_bytes == 250
    assert _bodies(spool) == [bytes([2]) * 100, b"x" * 150]
    assert len(list(tmp_path.glob("*.batch.gz"))) == 0


def test_the_newest_batch_stays_even_if_alone_over_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10, clock=Clock(T0))
    spool.put(b"a" * 5, first_ts=T0, seq=0)
    spool.put(b"b" * 50, first_ts=T0 + 1, seq=1)
    assert _bodies(spool) == [b"b" * 50]


def test_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=Clock(T0))
    spool.put(b"one", first_ts=T0, seq=7)
    spool.put(b"two", first_ts=T0 + 10, seq=8)
    spool.close()
    (tmp_path / ".tmp-001770000020000-000000000009.batch.gz-123").write_bytes(
        b"half a wri"
    )  # a crash mid-write
    again = Spool(tmp_path, max_bytes=1 << 20, clock=Clock(T0 + 60))
    assert len(again) == 2 and again.max_seq == 8
    assert _bodies(again) == [b"one", b"two"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_one_owner_per_directory(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolBusy, match="in use by another shipper"):
        Spool(tmp_path, max_bytes=1 << 20)
    spool.close()
    Spool(tmp_path, max_bytes=1 << 20).close()


def test_batches_too_old_for_ingest_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=clock)
    spool.put(b"old", first_ts=T0 - DEFAULT_MAX_AGE_S - 1, seq=1)
    spool.put(b"fresh", first_ts=T0 - 60, seq=2)
    with caplog.at_level(logging.WARNING):
        assert [e.seq for e in spool.expire()] == [1]
        assert _bodies(spool) == [b"fresh"]
    assert [r.__dict__["dropped"] for r in caplog.records if "too old" in r.getMessage()] == [1]
    assert DEFAULT_MAX_AGE_S < 6 * 3600  # ingest refuses batches older than 6 h: leave a margin


class FailingDisk:
    """`atomic_write`, or an OSError with `errno` while `fail` is set; counts the writes tried."""

    def __init__(self) -> None:
        self.fail: int | None = None
        self.tries = 0

    def __call__(self, path: Path, data: bytes) -> None:
        self.tries += 1
        if self.fail is not None:
            raise OSError(self.fail, "injected")
        atomic_write(path, data)


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [(r.getMessage(), r.__dict__.get("state")) for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_full_disk_is_a_state_said_once_and_probed_on_a_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk, mono = FailingDisk(), Clock(0.0)
    probe = Backoff(base_s=5.0, cap_s=300.0, clock=mono, jitter=lambda: 1.0)
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=Clock(T0), write=disk, probe_backoff=probe, label="n1")
    spool.put(b"kept", first_ts=T0, seq=0)
    disk.fail = errno.ENOSPC
    with caplog.at_level(logging.WARNING):
        for seq in range(1, 5):  # four batches, one failed write: the others never touch the disk
            with pytest.raises(SpoolUnavailable) as e:
                spool.put(b"x", first_ts=T0 + seq, seq=seq)
            assert e.value.state == "full"
        # the probe at open, "kept", then the one write that failed
        assert (spool.state, disk.tries) == (SpoolState.FULL, 3)
        mono.now += 5.0  # the probe is due: still full, the next wait doubles
        with pytest.raises(SpoolUnavailable):
            spool.put(b"x", first_ts=T0 + 5, seq=5)
        assert disk.tries == 4  # one probe write, still failing: the batch itself is not tried
        disk.fail = None
        mono.now += 9.9
        assert spool.reprobe() is SpoolState.FULL and disk.tries == 4  # not before 10 s
        mono.now += 0.1
        assert spool.reprobe() is SpoolState.OK
        spool.put(b"y", first_ts=T0 + 6, seq=6)
    assert _messages(caplog) == [
        ("spool cannot take batches: shipping without a spool until it can", "full"),
        ("spool writable again", None),
    ]
    assert spool.seqs == (0, 6)  # what it held while full was never lost: it can still be sent
    assert _bodies(spool) == [b"kept", b"y"]


def test_an_unusable_directory_at_start_is_not_an_exit_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool directory should be")
    mono = Clock(0.0)
    probe = Backoff(base_s=5.0, cap_s=300.0, clock=mono, jitter=lambda: 1.0)
    with caplog.at_level(logging.WARNING):
        spool = Spool(blocker, max_bytes=1 << 20, clock=Clock(T0), probe_backoff=probe)
        assert (spool.state, len(spool)) == (SpoolState.UNWRITABLE, 0)
        with pytest.raises(SpoolUnavailable, match="is unwritable"):
            spool.put(b"a", first_ts=T0, seq=0)
        blocker.unlink()
        mono.now += 5.0
        spool.put(b"a", first_ts=T0, seq=0)
    assert spool.state is SpoolState.OK and spool.seqs == (0,)
    assert _messages(caplog) == [
        ("spool cannot take batches: shipping without a spool until it can", "unwritable"),
        ("spool writable again", None),
    ]
    spool.close()
    Spool(blocker, max_bytes=1 << 20).close()  # the lock was taken and released


def test_a_directory_that_becomes_readable_shows_what_it_held(tmp_path: Path) -> None:
    Spool(tmp_path / "spool", max_bytes=1 << 20, clock=Clock(T0)).put(b"old", first_ts=T0, seq=3)
    shutil.move(tmp_path / "spool", tmp_path / "away")
    (tmp_path / "spool").write_text("blocker")
    mono = Clock(0.0)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, probe_backoff=Backoff(clock=mono, jitter=lambda: 1))
    assert spool.state is SpoolState.UNWRITABLE
    (tmp_path / "spool").unlink()
    shutil.move(tmp_path / "away", tmp_path / "spool")
    mono.now += 1.0
    assert spool.reprobe() is SpoolState.OK and spool.seqs == (3,) and spool.max_seq == 3


# -- seq -------------------------------------------------------------------------------------------


def test_a_new_node_starts_seq_from_the_clock_and_persists_it(tmp_path: Path) -> None:
    seq = SeqStore(tmp_path, clock=Clock(T0))
    assert [seq.take() for _ in range(3)] == [1_770_000_000_000, 1_770_000_000_001, 1_770_000_000_002]
    assert (tmp_path / SEQ_FILE).read_text() == "1770000000003"
    assert SeqStore(tmp_path, clock=Clock(T0 + 60)).take() == 1_770_000_000_003  # trusted: no jump
    assert clock_seed(4102444800.0) < MAX_SEQ  # ms since the epoch stays exact in JSON past 2100


def test_seq_never_goes_below_the_spooled_batches(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_text("5")
    assert SeqStore(tmp_path, floor=41).take() == 41
    (tmp_path / SEQ_FILE).write_text("garbage")  # not trusted: the clock, and still above the floor
    assert SeqStore(tmp_path, floor=41, clock=Clock(T0)).take() == 1_770_000_000_000
    (tmp_path / SEQ_FILE).write_text(str(MAX_SEQ + 1))  # out of range: not trusted
    assert SeqStore(tmp_path, clock=Clock(T0)).take() == 1_770_000_000_000


def test_seq_keeps_increasing_when_it_cannot_be_persisted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FailingDisk()
    clock = Clock(T0)
    seq = SeqStore(tmp_path, clock=clock, write=disk)
    first = seq.take()
    disk.fail = errno.ENOSPC
    with caplog.at_level(logging.WARNING):
        assert [seq.take(), seq.take()] == [first + 1, first + 2]  # on in memory
        assert not (tmp_path / SEQ_FILE).exists()  # the stale value is gone: it must not be trusted
        clock.now += 30  # a restart while the disk is still full: seeded from the clock, above all
        again = SeqStore(tmp_path, clock=clock, write=disk)
        assert again.take() == clock_seed(T0 + 30) > first + 2
        disk.fail = None
        assert again.take() == clock_seed(T0 + 30) + 1
    assert [m for m, _ in _messages(caplog)] == [
        "seq not persisted: the next start seeds seq from the clock",  # once, not per batch
        "seq not persisted: the next start seeds seq from the clock",  # the new process, once
        "seq persisted again",
    ]
    assert (tmp_path / SEQ_FILE).read_text() == str(clock_seed(T0 + 30) + 2)


def test_an_unwritable_seq_file_at_start_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_text("7")  # the last run could not persist what came after 7
    disk = FailingDisk()
    disk.fail = errno.EROFS
    assert SeqStore(tmp_path, clock=Clock(T0), write=disk).take() == 1_770_000_000_000
