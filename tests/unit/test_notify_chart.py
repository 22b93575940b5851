"""The chart of a finding (gpulse.notify.chart): a PNG of the exact size, drawn the same every
time, with the flagged row or line in the marking colour where the data puts it; and the chat
payloads that carry it (Slack's image block, Jandi's imageUrl, Alertmanager's annotation)."""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable
from dataclasses import replace

import boto3
import pytest
import requests
from PIL import Image

from devstack import chat_sink
from gpulse.analyze.recovery import recovered
from gpulse.finding import Evidence, EvidenceRow, Finding
from gpulse.notification import Notification, single
from gpulse.notify import alertmanager, jandi, slack
from gpulse.notify import chart as c

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
WINDOW_S = 600.0
POINTS = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def near(pixel: tuple[int, ...], want: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], want, strict=True))


def image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def px(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = img.getpixel((x, y))  # type: ignore[misc]
    return (r, g, b)


def heatmap_finding(flagged_row: int = 3, rows: int = 8) -> Finding:
    ev = Evidence(
        title="GPU utilisation per node in group a, last 10 min",
        unit="%",
        rows=[
            EvidenceRow(f"node-{i:02d}", [5.0 if i == flagged_row else 80.0] * POINTS, 0.0, i == flagged_row)
            for i in range(rows)
        ],
        reference=80.0,
        reference_label="group median",
        start=T0 - WINDOW_S,
        end=T0,
    )
    return Finding(
        rule="imbalance",
        title="Cross-node imbalance",
        severity="warning",
        state="firing",
        fingerprint="fp-imbalance",
        cluster="c1",
        since=T0 - 240,  # the last 4 minutes: the right 40% of the window is the fault span
        at=T0,
        summary="node-03 at 5% while its group runs at 80%",
        action="look at node-03",
        nodes=[f"node-{flagged_row:02d}"],
        evidence=ev,
    )


def line_finding(value: float = 50.0, reference: float | None = 80.0) -> Finding:
    ev = Evidence(
        title="node-03/2: memory in use, last 10 min",
        unit="%",
        rows=[EvidenceRow("memory in use", [value] * POINTS, value, True)],
        reference=reference,
        reference_label="threshold",
        start=T0 - WINDOW_S,
        end=T0,
    )
    return Finding(
        rule="memory_pressure",
        title="GPU memory pressure",
        severity="warning",
        state="firing",
        fingerprint="fp-memory",
        cluster="c1",
        since=T0 - 240,
        at=T0,
        summary="node-03 GPU 2 at 50% of its memory",
        action="reduce the batch size",
        gpus=["node-03/2"],
        evidence=ev,
    )


@functools.cache
def heat_png() -> bytes:
    return c.render_png(heatmap_finding(flagged_row=3, rows=8))


@functools.cache
def line_png() -> bytes:
    return c.render_png(line_finding(value=50.0, reference=80.0))


def box_x(box: tuple[float, float, float, float], fraction: float) -> int:
    return round((box[0] + box[2] * fraction) * c.WIDTH_PX)


def box_y(box: tuple[float, float, float, float], fraction_from_top: float) -> int:
    top = 1.0 - (box[1] + box[3])
    return round((top + box[3] * fraction_from_top) * c.HEIGHT_PX)


# ---- the PNG


@pytest.mark.parametrize(("make", "png_of"), [(heatmap_finding, heat_png), (line_finding, line_png)])
def test_a_chart_is_a_png_of_the_stated_size_and_the_same_bytes_every_time(
    make: Callable[[], Finding], png_of: Callable[[], bytes]
) -> None:
    finding = make()
    png = png_of()
    assert png[:8] == PNG_SIGNATURE
    # IHDR is the first chunk: length 13, type, then width and height, big-endian
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (c.WIDTH_PX, c.HEIGHT_PX) == (800, 400)
    assert image(png).size == (800, 400)
    assert c.render_png(finding) == png
    assert b"Software" not in png and b"tIME" not in png  # nothing that changes between runs


def test_the_heatmap_marks_the_flagged_row_in_vermillion_and_draws_each_row_where_it_belongs() -> None:
    rows = 8
    img = image(heat_png())
    strip_x = box_x(c.FLAG_STRIP_BOX, 0.5)
    from matplotlib import colormaps  # after the chart drew: it is what imported matplotlib

    cmap = colormaps[c.HEATMAP_CMAP]
    busy = tuple(round(255 * v) for v in cmap(0.80)[:3])
    idle = tuple(round(255 * v) for v in cmap(0.05)[:3])
    before_fault_x = box_x(c.HEATMAP_BOX, 0.25)  # 2.5 min into the window: before `since`
    for row in range(rows):
        y = box_y(c.HEATMAP_BOX, (row + 0.5) / rows)
        strip = px(img, strip_x, y)
        cell = px(img, before_fault_x, y)
        if row == 3:
            assert near(strip, rgb(c.VERMILLION)), (row, strip)
            assert near(cell, idle), (row, cell)
        else:
            assert near(strip, rgb(c.UNFLAGGED_STRIP)), (row, strip)
            assert near(cell, busy), (row, cell)


def test_the_heatmap_line_at_the_fault_start_is_drawn_at_since() -> None:
    img = image(heat_png())
    y = box_y(c.HEATMAP_BOX, 0.5 / 8)  # row 0, a busy row
    at_since = box_x(c.HEATMAP_BOX, 360 / 600)  # since is 6 min into the 10-min window
    assert near(px(img, at_since, y), rgb(c.VERMILLION), tol=40)
    assert not near(px(img, box_x(c.HEATMAP_BOX, 0.3), y), rgb(c.VERMILLION), tol=40)


def test_the_line_chart_draws_the_gpu_series_at_its_value_and_the_threshold_dashed() -> None:
    img = image(line_png())
    # the y axis runs 0..scale_max (100%): 50% is half way up the plot box
    x = box_x(c.LINES_BOX, 0.25)  # before the fault span: on white
    assert near(px(img, x, box_y(c.LINES_BOX, 0.5)), rgb(c.VERMILLION), tol=30)
    assert not near(px(img, x, box_y(c.LINES_BOX, 0.7)), rgb(c.VERMILLION), tol=60)
    # the threshold (80%): a black dashed line, so some pixels along it are black, some not (the
    # grid line shows between the dashes)
    y_ref = box_y(c.LINES_BOX, 0.2)
    along = [px(img, xx, y_ref) for xx in range(box_x(c.LINES_BOX, 0.05), box_x(c.LINES_BOX, 0.5))]
    assert any(near(p, (0, 0, 0), tol=40) for p in along)
    assert any(near(p, rgb("#DDDDDD"), tol=10) for p in along)
    # the fault span (the last 40% of the window) is shaded in vermillion, lightly
    shaded = px(img, box_x(c.LINES_BOX, 0.8), box_y(c.LINES_BOX, 0.9))
    blank = px(img, box_x(c.LINES_BOX, 0.3), box_y(c.LINES_BOX, 0.9))
    assert blank == (255, 255, 255)
    want = tuple(round(255 + c.SPAN_ALPHA * (v - 255)) for v in rgb(c.VERMILLION))
    assert near(shaded, want, tol=3)


def test_many_rows_make_a_heatmap_whatever_the_rule_and_a_flagged_row_beyond_the_limit_is_kept() -> None:
    many = heatmap_finding(flagged_row=55, rows=60)
    many = replace(many, rule="idle_held")
    assert c.is_heatmap(many)
    assert many.evidence is not None
    shown = c.shown_rows(many.evidence)
    assert len(shown) == c.MAX_HEATMAP_ROWS
    assert [r.label for r in shown if r.flagged] == ["node-55"]
    assert [r.label for r in shown[:3]] == ["node-00", "node-01", "node-02"]
    assert image(c.render_png(many)).size == (800, 400)


def test_a_window_that_only_began_reporting_lately_is_drawn_over_the_part_with_data() -> None:
    f = heatmap_finding()
    assert f.evidence is not None
    rows = [replace(r, values=[*[None] * 20, *r.values[20:]]) for r in f.evidence.rows]
    img = image(c.render_png(replace(f, evidence=replace(f.evidence, rows=rows))))
    # the left edge of the heatmap is the first point with data (a busy row), not an empty cell
    left = px(img, box_x(c.HEATMAP_BOX, 0.02), box_y(c.HEATMAP_BOX, 0.5 / 8))
    assert not near(left, rgb(c.NO_DATA), tol=10)


def test_a_finding_without_a_time_axis_still_charts() -> None:
    f = line_finding()
    assert f.evidence is not None
    old = replace(f, evidence=replace(f.evidence, start=None, end=None))  # written before charts
    assert image(c.render_png(old)).size == (800, 400)


def test_resolves_still_showing_the_faults_picture_and_findings_without_evidence_get_no_chart() -> None:
    resolved = replace(line_finding(), state="resolved")  # not re-drawn: the picture is the fault's
    silent = replace(resolved, ended=T0 - 60)  # analyze had no data to re-draw it with
    bare = replace(line_finding(), evidence=None)
    assert not c.chartable(resolved) and not c.chartable(silent) and not c.chartable(bare)
    with pytest.raises(ValueError, match="no evidence to chart"):
        c.render_png(resolved)


def recovered_imbalance() -> tuple[Finding, Finding]:
    """(firing, resolved): the imbalance alert of `test_notify_recovery`, resolved at T0 + 780 by
    analyze, its picture re-drawn from that run's window (T0 + 180 to T0 + 780); the fault held
    from T0 + 200 to T0 + 650, then node-03 came back at 88 %."""
    from tests.unit import test_notify_recovery as r

    firing, _ = r._firing()
    assert firing.evidence is not None  # its time axis, as analyze gives it (`detection.with_span`)
    firing = replace(firing, evidence=replace(firing.evidence, start=r.T0, end=r.T0 + 600))
    resolved = recovered(
        replace(firing, state="resolved", at=r.T0 + 780), r._window(r._timeline(), 36, 156), r.T0 + 650
    )
    return firing, resolved


def test_a_resolve_is_charted_from_its_recovery_with_the_fault_span_ending_where_it_ended() -> None:
    firing, resolved = recovered_imbalance()
    t0 = firing.since - 200
    ev = resolved.evidence
    assert ev is not None and ev.recovery and c.chartable(resolved)
    # what the drawing is given: the recovery's rows, the fault span since → ended, its subtitle
    assert [r.values[-1] for r in ev.rows] == [92.0, 92.0, 88.0, 92.0, 92.0, 92.0, 92.0, 92.0]
    assert [r.label for r in ev.rows if r.flagged] == ["node-03"]
    assert (ev.start, ev.end) == (t0 + 180, t0 + 780)
    assert c.fault_span_s(resolved) == (t0 + 200, t0 + 650)
    assert c.fault_span_s(firing) == (t0 + 200, t0 + 600)  # firing: to the window's end
    assert c.subtitle(resolved) == (
        "RESOLVED Cross-node imbalance · fault 02:43 UTC–02:50 UTC (shaded), recovery after it"
    )
    assert c.alt_text(resolved) == (
        "Heatmap: GPU utilisation per node in demo, last 10 min. Flagged (marked in vermillion): node-03. "
        "Shaded: the fault, 02:43 UTC to 02:50 UTC; after it, the recovery (resolved at 02:53 UTC)."
    )
    png = c.render_png(resolved)
    same_data_firing = c.render_png(replace(resolved, state="firing", ended=None))
    assert png != c.render_png(firing) and png != same_data_firing
    img = image(png)
    assert img.size == (800, 400)
    from matplotlib import colormaps  # after the chart drew: it is what imported matplotlib

    cmap = colormaps[c.HEATMAP_CMAP]
    y = box_y(c.HEATMAP_BOX, 2.5 / 8)  # node-03's row
    in_fault, recovered_x = box_x(c.HEATMAP_BOX, 0.5), box_x(c.HEATMAP_BOX, 0.92)
    assert near(px(img, in_fault, y), tuple(round(255 * v) for v in cmap(0.01)[:3]), tol=40)
    assert near(px(img, recovered_x, y), tuple(round(255 * v) for v in cmap(0.88)[:3]))
    # the fault's end is marked in bluish green, 470 s into the 600 s window
    ended_x = box_x(c.HEATMAP_BOX, 470 / 600)
    row0 = box_y(c.HEATMAP_BOX, 0.5 / 8)
    assert any(near(px(img, x, row0), rgb(c.BLUISH_GREEN), tol=40) for x in range(ended_x - 2, ended_x + 3))
    as_firing = image(same_data_firing)
    assert not any(
        near(px(as_firing, x, row0), rgb(c.BLUISH_GREEN), tol=40) for x in range(ended_x - 2, ended_x + 3)
    )


def test_alt_text_says_what_is_flagged_and_since_when_in_utc() -> None:
    assert c.alt_text(heatmap_finding()) == (
        "Heatmap: GPU utilisation per node in group a, last 10 min. "
        "Flagged (marked in vermillion): node-03. Shaded: firing since 07:56 UTC."
    )
    assert c.alt_text(line_finding()) == (
        "Line chart: node-03/2: memory in use, last 10 min. Flagged (marked in vermillion): "
        "memory in use. Dashed line: threshold 80%. Shaded: firing since 07:56 UTC."
    )


# ---- Pictures: once per (notification, finding), never in the way


def store() -> c.ChartStore:
    # a real client that is never called in these tests (no socket is opened)
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return c.ChartStore("charts", client=client)


def test_the_key_is_derived_from_the_notification_id_and_the_fingerprint() -> None:
    s = store()
    assert s.key("fp:firing:1", "fp") == s.key("fp:firing:1", "fp")
    assert s.key("fp:firing:1", "fp") != s.key("fp:firing:2", "fp")
    assert s.key("n1", "abc").startswith("charts/") and s.key("n1", "abc").endswith("/abc.png")
    with pytest.raises(ValueError, match="604800"):
        c.ChartStore("charts", link_s=604_801, client=s.client)


def test_a_chart_that_cannot_be_drawn_is_counted_once_and_the_message_goes_without() -> None:
    calls: list[str] = []

    def broken(f: Finding) -> bytes:
        calls.append(f.fingerprint)
        raise RuntimeError("no fonts")

    pictures = c.Pictures(store(), draw=broken)
    n = single(line_finding())
    assert pictures.for_notification(n) is None
    assert pictures.for_notification(n) is None  # remembered: not drawn again for this notification
    assert calls == ["fp-memory"]
    assert pictures.take_counts() == (0, 1)
    assert pictures.take_counts() == (0, 0)
    # the message itself is whole, only without the image
    channel = slack.SlackWebhook("ops", "http://127.0.0.1:9/hook", requests.Session(), pictures=pictures)
    assert channel.render(n) == slack.render(n)


def test_the_chat_chart_is_the_first_firing_alert_the_message_lists() -> None:
    firing = line_finding()
    other = replace(heatmap_finding(), severity="critical")
    gone = replace(line_finding(), fingerprint="fp-gone", state="resolved")
    n = Notification(
        id="n1", route="default", group={"cluster": "c1"}, firing=[firing, other], resolved=[gone]
    )
    assert c.chart_subject(n) == other  # critical is listed first
    assert c.chart_subject(replace(n, firing=[])) is None


# ---- the payloads

PICTURE = c.Picture(url="http://127.0.0.1:5000/charts/x.png?X-Amz-Expires=604800", alt="Line chart: memory.")


def test_slack_appends_one_image_block_after_the_text_blocks() -> None:
    text = slack.render(single(line_finding()))
    payload = slack.with_picture(text, PICTURE)
    assert payload["blocks"] == [
        *text["blocks"],
        {"type": "image", "image_url": PICTURE.url, "alt_text": "Line chart: memory."},
    ]
    assert payload["text"] == text["text"]
    assert slack.with_picture(text, None) == text
    too_long = replace(PICTURE, url="http://127.0.0.1/" + "x" * 3000)
    assert slack.with_picture(text, too_long) == text


def test_jandi_adds_a_connect_info_entry_with_the_image_url() -> None:
    text = jandi.render(single(line_finding()))
    payload = jandi.with_picture(text, PICTURE)
    assert payload["connectInfo"] == [
        *text["connectInfo"],
        {"title": "Chart", "description": "Line chart: memory.", "imageUrl": PICTURE.url},
    ]
    assert payload["body"] == text["body"]
    assert jandi.with_picture(text, None) == text


def test_alertmanager_posts_each_firing_alerts_chart_as_an_annotation() -> None:
    f = line_finding()
    body = alertmanager.render(
        single(f), now=T0, lifetime_s=60, picture=lambda x: PICTURE.url if x.state == "firing" else None
    )
    assert body[0]["annotations"] == {
        "summary": f.summary,
        "description": f.action,
        alertmanager.PICTURE_ANNOTATION: PICTURE.url,
    }


# ---- the chat sink's picture checks (no socket: a non-loopback URL is refused before any fetch)


def test_the_sink_reads_a_png_size_from_its_ihdr_and_takes_pictures_out_of_the_text() -> None:
    assert chat_sink.png_size(line_png()) == (800, 400)
    assert chat_sink.png_size(b"GIF89a" + bytes(30)) is None
    payload = slack.with_picture(slack.render(single(line_finding())), PICTURE)
    assert chat_sink.picture_urls("slack", payload) == [PICTURE.url]
    assert chat_sink.without_pictures("slack", payload) == slack.render(single(line_finding()))
    result, body = chat_sink.fetch_picture("https://files.example.com/x.png")
    assert (result["ok"], body) == (False, b"")
    assert result["error"] == "not fetched: the local sink fetches loopback URLs only"
