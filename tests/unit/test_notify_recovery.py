"""A RESOLVED message shows the recovery: the resolve's evidence re-drawn from the window of the
run that resolved it (`gpulse.analyze.recovery`), the fault span marked by `Finding.ended`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from gpulse.alerting.state import AlertRecord, Rule, decide, to_finding
from gpulse.analyze.recovery import SERIES, draw, recovered, redraw, redrawer
from gpulse.detect.base import Condition, Detector, Window, downsample
from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.detect.gpu_imbalance import GpuImbalanceDetector
from gpulse.detect.idle_held import IdleHeldDetector
from gpulse.detect.imbalance import ImbalanceDetector
from gpulse.detect.memory_pressure import MemoryPressureDetector
from gpulse.detect.mig import MigIdleDetector
from gpulse.detect.network import NetworkDetector
from gpulse.detect.numa import NumaDetector
from gpulse.detect.silent_node import SilentNodeDetector
from gpulse.detect.throttling import ThrottlingDetector
from gpulse.finding import Evidence, EvidenceRow, Finding
from gpulse.notify.evidence import recovery_line
from tests.unit import (
    test_detect_gpu_imbalance as gi,
)
from tests.unit import (
    test_detect_idle_held as ih,
)
from tests.unit import (
    test_detect_imbalance as im,
)
from tests.unit import (
    test_detect_memory_pressure as mp,
)
from tests.unit import (
    test_detect_mig as mg,
)
from tests.unit import (
    test_detect_network as nw,
)
from tests.unit import (
    test_detect_numa as nu,
)
from tests.unit import (
    test_detect_silent_node as sn,
)
from tests.unit import (
    test_detect_throttling as th,
)

# --- every detector's picture can be drawn again ------------------------------------------------


def _imbalance() -> Window:
    levels = np.full((8, im.BINS), 92.0)
    levels[2, 40:] = 1.0
    levels[5, 50:] = 1.0
    return im.make_window(levels)


def _gpu_imbalance() -> Window:
    util = np.zeros((8, gi.BINS))
    util[0, 20:] = 97.0
    alice = gi.proc(3001, "alice", gi.ALICE_CONTAINER, first=20)
    return gi.make_window(util, gi.on(8, (range(8), alice)))


def _idle_held() -> Window:
    util, mem, proc = ih.eight_busy_gpus()
    util[7, 82:] = 0.0
    mem[7] = 22 * ih.GIB
    processes: list[list[ih.ProcessSeen]] = [[] for _ in range(8)]
    processes[7] = [
        ih.ProcessSeen(4242, "bob", ih.BOB_CONTAINER, "jupyter", int(22 * ih.GIB), ih.at(21), ih.at(119))
    ]
    return ih.make_window(util, mem, has_process=proc, processes=processes)


def _memory() -> Window:
    mem = np.vstack([mp.flat(30), mp.flat(30), mp.line(40, 0.25), mp.flat(30)])
    return mp.make_window(mem)


def _mig() -> Window:
    util, mem, proc = mg.seven_busy_slices()
    util[0, 60:] = 0.0
    mem[0] = 4.1 * mg.GIB
    carol = mg.ProcessSeen(
        5150, "carol", None, None, int(4.1 * mg.GIB), mg.T0, mg.at(119), mig_uuid=mg.UUIDS[0]
    )
    return mg.make_window(util, mem, has_process=proc, processes=[carol])


def _network() -> Window:
    levels = np.full((8, nw.BINS), 2.4 * nw.GBPS)
    levels[2, 80:] = 0.1 * nw.MBPS
    levels[5, 90:] = 3 * nw.MBPS
    return nw.make_window(levels)


def _numa() -> Window:
    processes = nu.well_placed()
    processes[3] = [nu.proc(4242, (0,), container="train-pod-7", first_seen=nu.at(30) + 1.2)]
    return nu.make_window(processes)


def _silent() -> Window:
    registry = [
        sn.NodeSeen("node-03", "a100", sn.END - 4),
        sn.NodeSeen("node-04", "a100", sn.END - 370),
        sn.NodeSeen("node-05", "a100", sn.END - 1),
    ]
    return sn.make_window(registry, {"node-03": sn.busy(), "node-04": sn.busy(46), "node-05": sn.busy()})


def _throttling() -> Window:
    gpu = th.busy_node()
    gpu["temp_c"][5, 72:] = 86.0
    gpu["throttle_thermal"][5, 72:] = 1.0
    return th.make_window(gpu)


FIRING: list[tuple[Detector, Callable[[], Window]]] = [
    (ImbalanceDetector(), _imbalance),
    (GpuImbalanceDetector(), _gpu_imbalance),
    (IdleHeldDetector(), _idle_held),
    (MemoryPressureDetector(), _memory),
    (MigIdleDetector(), _mig),
    (NetworkDetector(), _network),
    (NumaDetector(), _numa),
    (SilentNodeDetector(), _silent),
    (ThrottlingDetector(), _throttling),
]


@pytest.mark.parametrize(("detector", "make"), FIRING, ids=[d.name for d, _ in FIRING])
def test_each_detectors_picture_is_what_its_recipe_draws_from_the_same_window(
    detector: Detector, make: Callable[[], Window]
) -> None:
    """The recipe a detector writes into its evidence (series, subject, reduce) draws exactly the
    values and levels it showed: the recovery picture is the same picture, later."""
    window = make()
    found = [c for c in detector.detect(window, params_for(detector.name)) if c.evidence]
    found = [c for c in found if c.evidence and any(r.series for r in c.evidence.rows)]
    assert found, f"{detector.name} drew no picture with a recipe"
    for c in found:
        ev = c.evidence
        assert ev is not None
        drawn = draw(ev, window)
        assert drawn is not None
        assert [downsample(x, 30) for x in drawn] == [r.values for r in ev.rows]
        assert {r.series for r in ev.rows} <= set(SERIES)
        # each level is its `reduce` over the fault's own span: drawn again from `since`, the same
        # figures come back (a silent node's fault is its lack of data: nothing to draw since)
        again = redraw(ev, window, ended=c.since)
        if detector.name == "silent_node":
            assert again is None
            continue
        assert again is not None
        assert [(r.level, r.flagged) for r in again.rows] == [(r.level, r.flagged) for r in ev.rows]
        assert again.reference == ev.reference


def test_every_catalogued_detector_with_a_picture_is_covered_here() -> None:
    """A detector whose evidence has no recipe keeps its firing picture at a resolve (said so in
    the message); these have one, and input_bound and the cluster-wide silent picture do not."""
    covered = {d.name for d, _ in FIRING}
    assert covered == {
        "imbalance",
        "gpu_imbalance",
        "idle_held",
        "memory_pressure",
        "mig_idle",
        "network",
        "numa",
        "silent_node",
        "throttling",
    }
    assert covered < set(CATALOGUE)


# --- a resolve re-drawn from the current window -----------------------------------------------

T0 = im.T0
STEP = im.STEP


def _timeline() -> np.ndarray:
    """8 nodes at 92 %, node-03 at 1 % from bin 40 to bin 129, then back at 88 % (156 bins: 13 min)."""
    levels = np.full((8, 156), 92.0)
    levels[2, 40:130] = 1.0
    levels[2, 130:] = 88.0
    return levels


def _window(levels: np.ndarray, first: int, last: int) -> Window:
    """The 10-minute window of bins [first, last) of `levels`."""
    w = im.make_window(levels[:, first:last])
    end = T0 + STEP * last
    return replace(w, start=T0 + STEP * first, end=end, node_last_seen=np.full(len(w.nodes), end))


def _firing() -> tuple[Finding, Rule]:
    """The imbalance alert as it fired at bin 120 (T0 + 600)."""
    levels = _timeline()
    [cond] = ImbalanceDetector().detect(_window(levels, 0, 120), params_for("imbalance"))
    rule = Rule("imbalance", "Cross-node imbalance", for_s=120.0)
    return to_finding(cond, rule, "demo", cond.since, T0 + 600), rule


def test_a_resolve_shows_the_current_window_with_the_fault_span_marked() -> None:
    firing, rule = _firing()
    assert firing.evidence is not None and firing.evidence.rows[2].level == 1.0
    # it held last at bin 130's run (T0 + 650); analyze resolves it at T0 + 780 (bin 156)
    held = replace(firing, at=T0 + 650)
    record = AlertRecord("demo", firing.fingerprint, "imbalance", "firing", firing.since, held, version=3)
    now_window = _window(_timeline(), 36, 156)
    [d] = decide("demo", [], {firing.fingerprint: record}, {"imbalance": rule}, T0 + 780)

    out = redrawer(now_window)(d).record.outbox

    assert out is not None and out.state == "resolved"
    assert (out.since, out.ended, out.at) == (T0 + 200, T0 + 650, T0 + 780)
    flat: list[float | None] = [92.0] * 30
    # 30 slices of 4 bins from bin 36: bins 36-39 before the fault, 40-127 in it, 128-131 half, then back
    climb: list[float | None] = [92.0, *[1.0] * 22, 44.5, *[88.0] * 6]
    assert out.evidence == Evidence(
        title="GPU utilisation per node in demo, last 10 min",
        unit="%",
        rows=[
            EvidenceRow(
                f"node-0{i}",
                climb if i == 3 else flat,
                88.0 if i == 3 else 92.0,  # the median since the fault ended (bins 130-155)
                i == 3,  # still marked: the row that was at fault
                "node.util_gpu",
                f"node-0{i}",
                "median",
            )
            for i in range(1, 9)
        ],
        reference=92.0,
        reference_label="peers' median",
        start=T0 + 180,
        end=T0 + 780,
        level_s=180.0,
        reference_of="peers",
        recovery=True,
    )
    # what the queue carries reads back the same
    assert Finding.from_json(out.to_json()) == out


def test_the_levels_are_taken_only_since_the_fault_ended_and_within_level_s() -> None:
    firing, _ = _firing()
    assert firing.evidence is not None
    levels = _timeline()
    levels[2, 130:140] = 60.0  # a slow climb back: 60 % for 10 bins, then 88 % for 16
    now_window = _window(levels, 36, 156)
    mean = replace(firing.evidence, rows=[replace(r, reduce="mean") for r in firing.evidence.rows])

    median_since = redraw(firing.evidence, now_window, ended=T0 + 650)
    mean_since = redraw(mean, now_window, ended=T0 + 650)
    mean_last_minute = redraw(replace(mean, level_s=60.0), now_window, ended=T0 + 650)

    assert median_since is not None and median_since.rows[2].level == 88.0  # bins 130-155
    assert mean_since is not None and mean_since.rows[2].level == 77.2  # (10 × 60 + 16 × 88) / 26
    assert mean_last_minute is not None and mean_last_minute.rows[2].level == 88.0  # bins 144-155


def test_a_resolve_whose_node_is_silent_keeps_the_old_picture_and_says_when_it_ended() -> None:
    firing, _ = _firing()
    levels = _timeline()
    levels[2, 130:] = np.nan  # node-03 said nothing since the fault's last run
    resolved = replace(firing, state="resolved", at=T0 + 780)

    out = recovered(resolved, _window(levels, 36, 156), ended=T0 + 650)

    assert firing.evidence is not None
    # the picture it fired with, recovery False, and why
    assert out == replace(
        resolved, ended=T0 + 650, evidence=replace(firing.evidence, recovery_note="no_data")
    )
    assert recovery_line(out) == "no data since the fault last held at 02:50:50 UTC: the picture is from then"


def test_an_unflagged_row_with_no_data_since_is_left_out_not_drawn_empty() -> None:
    firing, _ = _firing()
    assert firing.evidence is not None
    levels = _timeline()
    levels[6, 125:] = np.nan  # node-07 went quiet as the fault ended

    ev = redraw(firing.evidence, _window(levels, 36, 156), ended=T0 + 650)

    assert ev is not None and [r.label for r in ev.rows] == [f"node-0{i}" for i in (1, 2, 3, 4, 5, 6, 8)]


def test_a_picture_without_a_recipe_or_a_window_without_its_series_is_not_redrawn() -> None:
    firing, _ = _firing()
    ev = firing.evidence
    assert ev is not None
    window = _window(_timeline(), 36, 156)
    old = replace(ev, rows=[EvidenceRow(r.label, r.values, r.level, r.flagged) for r in ev.rows])
    assert redraw(old, window, ended=T0 + 650) is None  # a finding written before recipes existed
    unknown = replace(ev, rows=[replace(r, series="gpu.nonsense") for r in ev.rows])
    assert redraw(unknown, window, ended=T0 + 650) is None
    no_util = replace(window, gpu={})
    assert redraw(ev, no_util, ended=T0 + 650) is None
    # the window has not moved past the fault's last run: nothing to show of a recovery
    assert redraw(ev, _window(_timeline(), 10, 130), ended=T0 + 650) is None


def test_only_a_fresh_resolve_is_redrawn() -> None:
    firing, rule = _firing()
    window = _window(_timeline(), 36, 156)
    hook = redrawer(window)
    record = AlertRecord("demo", firing.fingerprint, "imbalance", "firing", firing.since, firing, version=3)
    cond = Condition("imbalance", {"cluster": "demo", "node_group": None}, firing.since, "warning", "s", "a")
    [keep] = decide("demo", [cond], {firing.fingerprint: record}, {"imbalance": rule}, T0 + 660)
    assert hook(keep) == keep  # still firing: untouched
    told = replace(firing, state="resolved", ended=T0 + 600)
    done = AlertRecord(
        "demo", firing.fingerprint, "imbalance", "resolved", firing.since, firing, 4, outbox=told
    )
    # the condition is back before that resolve went out: a new pending alert carries it along
    back = replace(cond, since=T0 + 770)
    [again] = decide("demo", [back], {firing.fingerprint: done}, {"imbalance": rule}, T0 + 780)
    assert again.record.state == "pending" and again.record.outbox == told
    assert hook(again) == again  # it goes out as it was decided


def test_a_picture_that_fails_to_draw_never_stops_the_resolve(caplog: pytest.LogCaptureFixture) -> None:
    firing, rule = _firing()
    held = replace(firing, at=T0 + 650)
    record = AlertRecord("demo", firing.fingerprint, "imbalance", "firing", firing.since, held, version=3)
    [d] = decide("demo", [], {firing.fingerprint: record}, {"imbalance": rule}, T0 + 780)
    window = _window(_timeline(), 36, 156)
    broken = replace(window, gpu={"util_gpu": np.zeros(3)})  # not a (GPUs × bins) matrix: it raises

    out = redrawer(broken)(d).record.outbox

    before = d.record.outbox
    assert before is not None and before.evidence is not None
    # the picture it fired with, said so
    assert out == replace(before, ended=T0 + 650, evidence=replace(before.evidence, recovery_note="error"))
    assert recovery_line(out) == "the picture is from while it fired"
    assert [r.message for r in caplog.records] == ["recovery not drawn"]


@pytest.mark.parametrize(
    ("case", "note"),
    [
        # a rule whose picture has no recipe (input_bound, silent_node): the node did send data
        ("no recipe", "no_recipe"),
        # the window lacks the picture's series: not a sign that the node is silent
        ("no series", "no_recipe"),
        # the flagged node said nothing since the fault last held
        ("silent", "no_data"),
    ],
)
def test_a_resolve_not_redrawn_says_why_truthfully(case: str, note: str) -> None:
    firing, _ = _firing()
    ev = firing.evidence
    assert ev is not None
    levels = _timeline()
    if case == "silent":
        levels[2, 130:] = np.nan
    window = _window(levels, 36, 156)
    if case == "no recipe":
        ev = replace(ev, rows=[EvidenceRow(r.label, r.values, r.level, r.flagged) for r in ev.rows])
    if case == "no series":
        window = replace(window, gpu={})
    resolved = replace(firing, state="resolved", at=T0 + 780, evidence=ev)

    out = recovered(resolved, window, ended=T0 + 650)

    assert out == replace(resolved, ended=T0 + 650, evidence=replace(ev, recovery_note=note))
    assert Finding.from_json(out.to_json()) == out
    said = {
        "no_recipe": "the picture is from while it fired",
        "no_data": "no data since the fault last held at 02:50:50 UTC: the picture is from then",
    }
    assert recovery_line(out) == said[note]


def test_a_resolve_without_a_note_from_before_notes_existed_does_not_claim_no_data() -> None:
    firing, _ = _firing()
    # a resolve written before `recovery_note`: nothing says the node was silent
    old = replace(firing, state="resolved", at=T0 + 780, ended=T0 + 650)
    assert recovery_line(old) == "the picture is from while it fired"
