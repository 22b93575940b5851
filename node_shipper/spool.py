"""A bounded, crash-safe disk spool for batches that could not be posted, and the persisted seq.

Each spooled batch is one file holding the exact gzip body (unsigned: it is signed again when
it is sent, since a signature is only good for 5 minutes). Files are written to a temporary
name, fsynced, then renamed into place, so a crash leaves either the whole batch or nothing.
Names sort oldest first: `<first sample ms>-<seq>.batch.gz`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpulse.wire.batch import MAX_AGE_S
from node_shipper.errors import SpoolError

log = logging.getLogger(__name__)

SUFFIX = ".batch.gz"
SEQ_FILE = "next_seq"
LOCK_FILE = ".lock"
# Ingest refuses batches whose first sample is older than MAX_AGE_S; leave a minute for the trip.
DEFAULT_MAX_AGE_S = MAX_AGE_S - 60


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old content or the new, never a mix."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must reach the disk
    finally:
        os.close(dir_fd)


@dataclass(frozen=True, order=True)
class SpoolEntry:
    first_ms: int
    seq: int
    size: int
    path: Path

    @property
    def first_ts(self) -> float:
        return self.first_ms / 1000.0


def _parse_name(path: Path) -> tuple[int, int] | None:
    if not path.name.endswith(SUFFIX):
        return None
    stem = path.name[: -len(SUFFIX)]
    first, sep, seq = stem.partition("-")
    if not sep or not first.isdigit() or not seq.isdigit():
        return None
    return int(first), int(seq)


class Spool:
    """Batches waiting to be posted, oldest first, at most `max_bytes` on disk.

    One process owns a spool directory (an exclusive lock file says so). Open it again with a
    new object after a restart: it finds what the last run left.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
        label: str = "",
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._label = label or str(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock = open(directory / LOCK_FILE, "a")  # noqa: SIM115 - held for the spool's life
        except OSError as e:
            raise SpoolError(f"cannot use spool directory {directory}: {e}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SpoolError(f"spool directory {directory} is in use by another shipper") from None
        self._entries: list[SpoolEntry] = []
        for path in directory.iterdir():
            if path.name.startswith(".tmp-"):
                path.unlink(missing_ok=True)  # a write that a crash interrupted
                continue
            parsed = _parse_name(path)
            if parsed is not None:
                self._entries.append(SpoolEntry(parsed[0], parsed[1], path.stat().st_size, path))
        self._entries.sort()
        self._bytes = sum(e.size for e in self._entries)
        if self._entries:
            log.info("spool found batches", extra={"spool": self._label, "batches": len(self._entries)})

    def close(self) -> None:
        """Release the directory lock."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def max_seq(self) -> int | None:
        return max((e.seq for e in self._entries), default=None)

    def put(self, body: bytes, *, first_ts: float, seq: int) -> None:
        """Store one gzip body; if the spool is then over its bound, drop the oldest batches."""
        first_ms = int(first_ts * 1000)
        path = self.directory / f"{first_ms:015d}-{seq:012d}{SUFFIX}"
        try:
            atomic_write(path, body)
        except OSError as e:
            raise SpoolError(f"cannot write to spool {self.directory}: {e}") from None
        for same in [e for e in self._entries if e.path == path]:
            self._forget(same)
        self._entries.append(SpoolEntry(first_ms, seq, len(body), path))
        self._bytes += len(body)
        self._entries.sort()
        dropped = 0
        while self._bytes > self._max_bytes and len(self._entries) > 1:  # the newest always stays
            oldest = self._entries[0]
            self._forget(oldest)
            self._unlink(oldest)
            dropped += 1
        if dropped:
            log.warning(
                "spool full: dropped oldest batches",
                extra={"spool": self._label, "dropped": dropped, "max_bytes": self._max_bytes},
            )

    def expire(self) -> int:
        """Drop batches too old for ingest to accept; return how many."""
        cutoff_ms = (self._clock() - self._max_age_s) * 1000
        old = [e for e in self._entries if e.first_ms < cutoff_ms]
        for entry in old:
            self._forget(entry)
            self._unlink(entry)
        if old:
            log.warning(
                "spool: dropped batches too old for ingest",
                extra={"spool": self._label, "dropped": len(old), "max_age_s": self._max_age_s},
            )
        return len(old)

    def oldest(self) -> tuple[SpoolEntry, bytes] | None:
        """The oldest batch that is still young enough to send, with its body; None when empty."""
        self.expire()
        while self._entries:
            entry = self._entries[0]
            try:
                return entry, entry.path.read_bytes()
            except OSError as e:
                log.warning(
                    "spool: unreadable batch dropped", extra={"path": str(entry.path), "error": str(e)}
                )
                self._forget(entry)
                self._unlink(entry)
        return None

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a batch that was posted (or refused for good)."""
        self._forget(entry)
        self._unlink(entry)

    def _forget(self, entry: SpoolEntry) -> None:
        if entry in self._entries:
            self._entries.remove(entry)
            self._bytes -= entry.size

    def _unlink(self, entry: SpoolEntry) -> None:
        try:
            entry.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("spool: cannot delete", extra={"path": str(entry.path), "error": str(e)})


class SeqStore:
    """The node's next `seq`, persisted in the spool directory so it keeps increasing across restarts."""

    def __init__(self, directory: Path, *, floor: int = 0) -> None:
        self._path = directory / SEQ_FILE
        self._next = floor
        try:
            text = self._path.read_text().strip()
        except FileNotFoundError:
            text = ""
        except OSError as e:
            raise SpoolError(f"cannot read {self._path}: {e}") from None
        if text:
            if text.isdigit():
                self._next = max(int(text), floor)
            else:
                log.warning(
                    "seq file unreadable; continuing after the spooled batches",
                    extra={"path": str(self._path)},
                )

    def take(self) -> int:
        """The seq for the next batch; the one after it is on disk before this returns.

        If the file cannot be written, the counter still advances in memory (a batch is worth
        more than a gap-free seq after a restart) and the failure is logged.
        """
        seq = self._next
        self._next = seq + 1
        try:
            atomic_write(self._path, str(self._next).encode())
        except OSError as e:
            log.error("seq not persisted", extra={"path": str(self._path), "error": str(e)})
        return seq
