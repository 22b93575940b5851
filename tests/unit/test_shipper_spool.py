"""The disk spool: bounded (oldest dropped), crash-safe, survives restarts, drops what ingest would refuse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from node_shipper.errors import SpoolError
from node_shipper.spool import DEFAULT_MAX_AGE_S, SeqStore, Spool

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
    with pytest.raises(SpoolError, match="in use by another shipper"):
        Spool(tmp_path, max_bytes=1 << 20)
    spool.close()
    Spool(tmp_path, max_bytes=1 << 20).close()


def test_batches_too_old_for_ingest_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    spool = Spool(tmp_path, max_bytes=1 << 20, clock=clock)
    spool.put(b"old", first_ts=T0 - DEFAULT_MAX_AGE_S - 1, seq=1)
    spool.put(b"fresh", first_ts=T0 - 60, seq=2)
    with caplog.at_level(logging.WARNING):
        assert _bodies(spool) == [b"fresh"]
    assert [r.__dict__["dropped"] for r in caplog.records if "too old" in r.getMessage()] == [1]
    assert DEFAULT_MAX_AGE_S < 6 * 3600  # ingest refuses batches older than 6 h: leave a margin


def test_unwritable_spool_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        Spool(blocker / "spool", max_bytes=1 << 20)


def test_seq_persists_across_restarts(tmp_path: Path) -> None:
    seq = SeqStore(tmp_path)
    assert [seq.take() for _ in range(3)] == [0, 1, 2]
    assert (tmp_path / "next_seq").read_text() == "3"
    assert SeqStore(tmp_path).take() == 3


def test_seq_never_goes_below_the_spooled_batches(tmp_path: Path) -> None:
    (tmp_path / "next_seq").write_text("garbage")
    assert SeqStore(tmp_path, floor=41).take() == 41
    (tmp_path / "next_seq").write_text("5")
    assert SeqStore(tmp_path, floor=41).take() == 41


def test_seq_advances_even_if_it_cannot_be_persisted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seq = SeqStore(tmp_path)
    (tmp_path / "next_seq").mkdir()  # a directory where the file should be: every write fails
    with caplog.at_level(logging.ERROR):
        assert [seq.take(), seq.take()] == [0, 1]
    assert [r.getMessage() for r in caplog.records] == ["seq not persisted", "seq not persisted"]
