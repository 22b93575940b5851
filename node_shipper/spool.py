"""A bounded, crash-safe disk spool for batches that could not be posted, and the persisted seq.

Each spooled batch is one file holding the exact gzip body (unsigned: it is signed again when
it is sent, since a signature is only good for 5 minutes). Files are written to a temporary
name, fsynced, then renamed into place, so a crash leaves either the whole batch or nothing.
Names sort oldest first: `<first sample ms>-<seq>.batch.gz`.

A spool whose disk is full or unwritable is not an error of the shipper: the spool says so
(`state`, logged once per change), refuses batches without touching the disk, and probes the
disk again on a backoff; the outbox keeps such batches in memory meanwhile and sends live.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gpulse_wire.limits import MAX_AGE_S
from node_shipper.errors import SpoolBusy, SpoolUnavailable
from node_shipper.retry import Backoff

log = logging.getLogger(__name__)

SUFFIX = ".batch.gz"
SEQ_FILE = "next_seq"
LOCK_FILE = ".lock"
PROBE_FILE = "probe"
# Ingest refuses batches whose first sample is older than MAX_AGE_S; leave a minute for the trip.
DEFAULT_MAX_AGE_S = MAX_AGE_S - 60
# A probe is one tiny write: once a minute at most costs nothing, and a freed disk is used soon.
PROBE_BASE_S = 5.0
PROBE_CAP_S = 60.0
# Batch v1's seq is a JSON integer that every reader must hold exactly (a float64 mantissa).
MAX_SEQ = 2**53 - 1
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

Writer = Callable[[Path, bytes], None]


class SpoolState(enum.Enum):
    """What the spool can do now; the value is what each batch reports in `agent.spool`."""

    OK = "ok"
    FULL = "full"  # ENOSPC / EDQUOT: the disk, not our own bound
    UNWRITABLE = "unwritable"  # any other reason a write fails (permissions, read-only, I/O error)
    DISABLED = "disabled"  # --no-spool: the operator chose to run without one


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
        with contextlib.suppress(OSError):  # the original error is the one worth raising
            tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must reach the disk
    finally:
        os.close(dir_fd)


def state_of(error: OSError) -> SpoolState:
    """FULL for a disk out of space or quota, UNWRITABLE for any other failure (by errno, not text)."""
    return SpoolState.FULL if error.errno in _FULL_ERRNOS else SpoolState.UNWRITABLE


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

    One process owns a spool directory (an exclusive lock file says so; `SpoolBusy` otherwise).
    Open it again with a new object after a restart: it finds what the last run left. A
    directory that cannot be created, locked or written does not raise: `state` says why, and
    `put` refuses batches until a probe (at most every PROBE_BASE_S…PROBE_CAP_S) finds it fit.
    `write` and `probe_backoff` are injected so that tests can fail the disk and step time.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
        write: Writer = atomic_write,
        probe_backoff: Backoff | None = None,
        label: str = "",
    ) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._write = write
        self._probe = probe_backoff or Backoff(base_s=PROBE_BASE_S, cap_s=PROBE_CAP_S)
        self._label = label or str(directory)
        self._lock: IO[str] | None = None
        self._entries: list[SpoolEntry] = []
        self._bytes = 0
        self.state = SpoolState.OK
        self.error = ""  # why the spool is not OK (strerror), for the log and the operator
        self._open(busy_raises=True)

    # -- state -------------------------------------------------------------------------------------

    def _open(self, *, busy_raises: bool = False) -> None:
        """Take the lock and read the directory (once), then prove a write works."""
        if self._lock is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                lock = open(self.directory / LOCK_FILE, "a")  # noqa: SIM115 - held for the spool's life
            except OSError as e:
                self._failed(e)
                return
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                if busy_raises:
                    raise SpoolBusy(
                        f"spool directory {self.directory} is in use by another shipper"
                    ) from None
                self._failed(OSError(errno.EBUSY, "in use by another shipper"))
                return
            try:
                self._scan()
            except OSError as e:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()
                self._failed(e)
                return
            self._lock = lock
        try:
            # a few bytes, not none: an empty file needs no block, so it passes on a full disk
            self._write(self.directory / PROBE_FILE, b"gpulse spool probe\n")
            (self.directory / PROBE_FILE).unlink(missing_ok=True)
        except OSError as e:
            self._failed(e)
            return
        self._recovered()

    def _scan(self) -> None:
        entries = []
        for path in self.directory.iterdir():
            if path.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):  # a write that a crash interrupted
                    path.unlink(missing_ok=True)
                continue
            parsed = _parse_name(path)
            if parsed is not None:
                entries.append(SpoolEntry(parsed[0], parsed[1], path.stat().st_size, path))
        self._entries = sorted(entries)
        self._bytes = sum(e.size for e in self._entries)
        if self._entries:
            log.info("spool found batches", extra={"spool": self._label, "batches": len(self._entries)})

    def _failed(self, error: OSError) -> None:
        new = state_of(error)
        self.error = error.strerror or str(error)
        self._probe.failed()
        if new is not self.state:  # once per change, not once per batch
            log.error(
                "spool cannot take batches: shipping without a spool until it can",
                extra={
                    "spool": self._label,
                    "state": new.value,
                    "error": self.error,
                    "retry_in_s": round(self._probe.wait_s(), 1),
                },
            )
            self.state = new

    def _recovered(self) -> None:
        self._probe.succeeded()
        if self.state is not SpoolState.OK:
            log.warning("spool writable again", extra={"spool": self._label, "was": self.state.value})
            self.state = SpoolState.OK
            self.error = ""

    def reprobe(self, *, now: bool = False) -> SpoolState:
        """If the spool is not OK and its probe backoff allows (or `now`), try the disk again;
        the state after."""
        if self.state is not SpoolState.OK and (now or self._probe.ready()):
            self._open()
        return self.state

    def close(self) -> None:
        """Release the directory lock."""
        if self._lock is not None and not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
        self._lock = None

    # -- batches -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def max_seq(self) -> int | None:
        return max((e.seq for e in self._entries), default=None)

    @property
    def seqs(self) -> tuple[int, ...]:
        """The seqs of the spooled batches, oldest first."""
        return tuple(e.seq for e in self._entries)

    def put(self, body: bytes, *, first_ts: float, seq: int) -> list[SpoolEntry]:
        """Store one gzip body; return the oldest batches dropped to stay within the bound.

        Raises SpoolUnavailable, without touching the disk, while the spool is not OK and its
        probe is not due; a failed write makes it not OK.
        """
        if self.reprobe() is not SpoolState.OK:
            raise SpoolUnavailable(
                f"spool {self._label} is {self.state.value}: {self.error}", state=self.state.value
            )
        first_ms = int(first_ts * 1000)
        path = self.directory / f"{first_ms:015d}-{seq:016d}{SUFFIX}"
        try:
            self._write(path, body)
        except OSError as e:
            self._failed(e)
            raise SpoolUnavailable(
                f"cannot write to spool {self._label}: {self.error}", state=self.state.value
            ) from None
        for same in [e for e in self._entries if e.path == path]:
            self._forget(same)
        self._entries.append(SpoolEntry(first_ms, seq, len(body), path))
        self._bytes += len(body)
        self._entries.sort()
        dropped = []
        while self._bytes > self._max_bytes and len(self._entries) > 1:  # the newest always stays
            oldest = self._entries[0]
            self._forget(oldest)
            self._unlink(oldest)
            dropped.append(oldest)
        if dropped:
            log.warning(
                "spool full: dropped oldest batches",
                extra={"spool": self._label, "dropped": len(dropped), "max_bytes": self._max_bytes},
            )
        return dropped

    def expire(self) -> list[SpoolEntry]:
        """Drop the batches too old for ingest to accept; return them."""
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
        return old

    def oldest(self) -> tuple[SpoolEntry, bytes] | None:
        """The oldest batch, with its body; None when empty. Call `expire` first to skip stale ones."""
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
            # Left on disk, it is posted again after a restart; ingest stores a batch_id once.
            log.warning("spool: cannot delete", extra={"path": str(entry.path), "error": str(e)})


def clock_seed(now: float) -> int:
    """The seq a node may start from when its persisted seq cannot be trusted: milliseconds since
    the epoch. A node closes at most one batch per second, so every seq it handed out before is
    below the clock's milliseconds now (unless the wall clock went back)."""
    return int(now * 1000)


class SeqStore:
    """The node's next `seq`, persisted in the spool directory, strictly increasing across restarts.

    Rule: at start, the persisted value is trusted only if it reads as a number and can be
    written back. Otherwise (missing, garbage, unreadable, unwritable) seq starts at
    `clock_seed(now)`, above any seq this node handed out before. Never below `floor` (the
    spooled batches). When a write fails during the run the counter goes on in memory and the
    stale file is deleted (possible even on a full disk), so the next start seeds from the clock.
    """

    def __init__(
        self,
        directory: Path,
        *,
        floor: int = 0,
        clock: Callable[[], float] = time.time,
        write: Writer = atomic_write,
    ) -> None:
        self._path = directory / SEQ_FILE
        self._write = write
        self.persisted = True
        persisted: int | None = None
        reason = "unreadable"
        try:
            text = self._path.read_text().strip()
            if text.isdigit() and int(text) <= MAX_SEQ:
                persisted = int(text)
        except FileNotFoundError:
            reason = "missing"
        except OSError:
            pass
        start = max(floor, persisted or 0)
        if persisted is None or not self._persist(start):
            start = max(start, clock_seed(clock()))
            log.log(
                logging.INFO if reason == "missing" else logging.WARNING,
                "seq starts from the clock",
                extra={
                    "path": str(self._path),
                    "why": reason if persisted is None else "unwritable",
                    "seq": start,
                },
            )
            self._persist(start)
        self._next = start

    def _persist(self, value: int) -> bool:
        try:
            self._write(self._path, str(value).encode())
        except OSError as e:
            if self.persisted:  # once per change, not once per batch
                log.error(
                    "seq not persisted: the next start seeds seq from the clock",
                    extra={"path": str(self._path), "error": e.strerror or str(e)},
                )
            self.persisted = False
            with contextlib.suppress(OSError):  # a stale value must not be trusted at the next start
                self._path.unlink(missing_ok=True)
            return False
        if not self.persisted:
            log.warning("seq persisted again", extra={"path": str(self._path)})
        self.persisted = True
        return True

    def take(self) -> int:
        """The seq for the next batch; the one after it is on disk (if the disk allows) on return."""
        seq = self._next
        self._next = seq + 1
        self._persist(self._next)
        return seq
