"""The outbox and spool against a reference model: every batch is delivered exactly once, still held,
or dropped for a reason the model allows; seq strictly increases across restarts.

A Hypothesis state machine drives the real `Outbox`, `Spool` and `SeqStore` on a real directory,
with an injected clock, a disk that can turn full or unwritable (the spool's injected writer
raises the errno a kernel would), a scripted ingest (200, 503, 429, 401, a one-shot 400) and
kill -9 (the objects are dropped without `close`, the lock released as the kernel would, and
everything is opened again from the directory). The model knows only what happened — answers,
disk faults, times — never the outbox's internals, and judges each drop by its stated reason.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from node_shipper.outbox import DropReason, Outbox
from node_shipper.retry import Backoff
from node_shipper.sender import Sender, SendResult, Verdict
from node_shipper.spool import SUFFIX, SeqStore, Spool, SpoolState, atomic_write

T0 = 1_770_000_000.0
BATCH_S = 10.0  # a batch takes this long to fill: the clock moves on with each one
SIZE = 50  # every body the same size, so "over the bound" can be judged per dropped batch
SPOOL_MAX = 4 * SIZE + 10
MEMORY_MAX = 2 * SIZE + 10
AUTH_HOLD_S = 120.0
MAX_AGE_S = 900.0
PROBE_CAP_S = 60.0
SHM = Path("/dev/shm")  # fsync is free on tmpfs; the spool's logic is the same


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Disk:
    """The spool's writer: `atomic_write`, or the errno of a full or unwritable disk."""

    def __init__(self) -> None:
        self.fault: int | None = None

    def __call__(self, path: Path, data: bytes) -> None:
        if self.fault is not None:
            raise OSError(self.fault, "injected")
        atomic_write(path, data)


ANSWERS = {
    "up": SendResult(Verdict.SENT, 200),
    "5xx": SendResult(Verdict.RETRY, 503, None, "busy"),
    "429": SendResult(Verdict.RETRY, 429, 3.0, "slow down"),
    "401": SendResult(Verdict.AUTH, 401, None, "bad signature"),
}


class OutboxModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="gpulse-model-", dir=SHM if SHM.is_dir() else None))
        self.wall, self.mono = Clock(T0), Clock(0.0)
        self.disk = Disk()
        self.server = "up"
        self.refuse_next = False
        # the model: facts only
        self.born: dict[int, float] = {}  # seq → first sample time
        self.born_mono: dict[int, float] = {}
        self.delivered: Counter[int] = Counter()
        self.dropped: dict[int, DropReason] = {}
        self.lost: set[int] = set()
        self.last_status: dict[int, int] = {}
        self.auth_since: float | None = None
        self.bad_disk: list[tuple[float, float]] = []  # [start, end) in monotonic time
        self.bad_since: float | None = None
        self.pumped_at = -1.0
        self.last_seq = -1
        self._open()

    def teardown(self) -> None:
        self.spool.close()  # not the outbox's close: a clean stop is not a model event
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the system under test ---------------------------------------------------------------------

    def _open(self) -> None:
        self.spool = Spool(
            self.dir,
            max_bytes=SPOOL_MAX,
            max_age_s=MAX_AGE_S,
            clock=self.wall,
            write=self.disk,
            probe_backoff=Backoff(base_s=5.0, cap_s=PROBE_CAP_S, clock=self.mono, jitter=lambda: 1.0),
        )
        floor = self.spool.max_seq + 1 if self.spool.max_seq is not None else 0
        self.seq = SeqStore(self.dir, floor=floor, clock=self.wall, write=self.disk)
        sender = mock.create_autospec(Sender, instance=True)
        sender.send.side_effect = self._answer
        sender.reload_secret.return_value = False
        self.outbox = Outbox(
            node="n1",
            spool=self.spool,
            sender=sender,
            backoff=Backoff(base_s=1.0, cap_s=30.0, clock=self.mono, jitter=lambda: 1.0),
            auth_hold_s=AUTH_HOLD_S,
            memory_max_bytes=MEMORY_MAX,
            max_age_s=MAX_AGE_S,
            clock=self.wall,
            monotonic=self.mono,
            on_drop=self._on_drop,
        )

    def _answer(self, body: bytes, timeout_s: float | None = None) -> SendResult:
        seq = int(body.split(b".")[0])
        if self.refuse_next:
            self.refuse_next = False
            result = SendResult(Verdict.DROP, 400, None, "schema: nope")
        else:
            result = ANSWERS[self.server]
        assert result.status is not None
        self.last_status[seq] = result.status
        if result.verdict is Verdict.SENT:
            self.delivered[seq] += 1
            self.auth_since = None
        elif result.verdict is Verdict.AUTH and self.auth_since is None:
            self.auth_since = self.wall.now
        return result

    def _on_drop(self, seq: int, reason: DropReason) -> None:
        assert seq in self.born and seq not in self.dropped, (seq, reason)
        now = self.wall.now
        if reason is DropReason.REFUSED:
            assert self.last_status.get(seq) == 400, (seq, reason, self.last_status.get(seq))
        elif reason is DropReason.AUTH_HOLD_EXPIRED:
            assert self.last_status.get(seq) == 401 and self.auth_since is not None
            assert now - self.auth_since >= AUTH_HOLD_S
        elif reason is DropReason.SPOOL_BOUND:
            assert self.spool.size_bytes + SIZE > SPOOL_MAX
            assert all((self.born[seq], seq) < (self.born[s], s) for s in self.spool.seqs)  # the oldest
        elif reason is DropReason.MEMORY_BOUND:
            assert len(self.outbox.in_memory) * SIZE + SIZE > MEMORY_MAX
        elif reason is DropReason.TOO_OLD:
            assert self.born[seq] < now - MAX_AGE_S
        else:
            raise AssertionError(f"seq {seq} dropped for a reason the model does not allow: {reason}")
        self.dropped[seq] = reason

    def _disk_was_bad(self, seq: int) -> bool:
        """May this batch be in memory? Only if the disk was bad in its life, or so recently before it
        that the spool has not probed it since (at most PROBE_CAP_S)."""
        since = self.born_mono[seq] - PROBE_CAP_S
        spans = [
            *self.bad_disk,
            *([(self.bad_since, self.mono.now + 1)] if self.bad_since is not None else []),
        ]
        return any(end > since for _, end in spans)

    def _tick(self, seconds: float) -> None:
        self.wall.now += seconds
        self.mono.now += seconds

    # -- events ------------------------------------------------------------------------------------

    @rule()
    def batch_produced(self) -> None:
        self._tick(BATCH_S)
        seq = self.seq.take()
        assert seq > self.last_seq, (seq, self.last_seq)  # strictly increasing, across restarts too
        self.last_seq = seq
        first_ts = self.wall.now - BATCH_S
        self.born[seq], self.born_mono[seq] = first_ts, self.mono.now
        self.outbox.offer(f"{seq}.".encode().ljust(SIZE, b"."), first_ts=first_ts, seq=seq)

    @rule()
    def sender_tick(self) -> None:
        self.outbox.pump()
        self.pumped_at = self.mono.now

    @rule(mode=st.sampled_from(sorted(ANSWERS)))
    def ingest_answers(self, mode: str) -> None:
        self.server = mode

    @rule()
    def next_post_is_refused_with_400(self) -> None:
        self.refuse_next = True

    @rule(fault=st.sampled_from([None, errno.ENOSPC, errno.EACCES]))
    def disk_turns(self, fault: int | None) -> None:
        if fault is not None and self.bad_since is None:
            self.bad_since = self.mono.now
        elif fault is None and self.bad_since is not None:
            self.bad_disk.append((self.bad_since, self.mono.now))
            self.bad_since = None
        self.disk.fault = fault

    @rule(seconds=st.one_of(st.floats(0.1, 30.0), st.sampled_from([AUTH_HOLD_S, MAX_AGE_S, PROBE_CAP_S])))
    def clock_advances(self, seconds: float) -> None:
        self._tick(seconds)

    @precondition(lambda self: len(self.born) > 0)
    @rule()
    def kill_9_and_restart(self) -> None:
        for seq in self.outbox.in_memory:  # memory dies with the process: allowed only for these
            assert self._disk_was_bad(seq), seq
            self.lost.add(seq)
        self.spool.close()  # what the kernel does with a dead process's flock
        self.auth_since = None  # the new process knows nothing of the last one's refusals
        self._open()

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def each_batch_ends_one_way(self) -> None:
        on_disk = {int(p.name.split("-")[1][: -len(SUFFIX)]) for p in self.dir.glob(f"*{SUFFIX}")}
        in_memory = set(self.outbox.in_memory)
        assert set(self.spool.seqs) == on_disk
        assert not on_disk & in_memory
        for seq in self.born:
            ends = [
                self.delivered[seq] == 1,
                seq in self.dropped,
                seq in self.lost,
                seq in on_disk,
                seq in in_memory,
            ]
            assert self.delivered[seq] <= 1, f"seq {seq} delivered {self.delivered[seq]} times"
            assert sum(ends) == 1, f"seq {seq}: delivered/dropped/lost/spooled/in memory = {ends}"

    @invariant()
    def memory_only_while_the_disk_is_bad(self) -> None:
        for seq in self.outbox.in_memory:
            assert self._disk_was_bad(seq), f"seq {seq} held in memory though the disk was fine"

    @invariant()
    def the_spool_recovers_by_itself(self) -> None:
        healthy_since = self.bad_disk[-1][1] if self.bad_disk else 0.0
        if self.bad_since is None and self.pumped_at >= healthy_since + PROBE_CAP_S:
            assert self.outbox.spool_state is SpoolState.OK
            assert self.outbox.in_memory == ()


TestOutboxModel = OutboxModel.TestCase
TestOutboxModel.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
