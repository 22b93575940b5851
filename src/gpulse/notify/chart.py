"""Charts: a finding's evidence drawn as a PNG for chat, stored in S3 behind an expiring link.

What is drawn is a pure function of the finding (`render_png`): for cross-node rules
(CROSS_NODE_RULES, or any evidence with more rows than a line chart can tell apart) a heatmap of
rows × time on a colour-blind-safe scale (cividis), the flagged rows marked in a strip beside it
and their labels; for per-GPU rules that GPU's series as lines (Okabe–Ito colours) with the line
it was held against. Either way the fault span (the finding's `since` to its decision) is shaded,
times are UTC and the axis names the unit. A resolve is charted when analyze re-drew its evidence
from the window that resolved it (`Evidence.recovery`): the fault span is then `since` to
`ended`, marked where it ends, and what follows it is the recovery. 800 × 400 px at 100 dpi:
readable at chat width on a phone. The output is deterministic (no timestamp or software tag in
the PNG), so a retried send stores the same bytes under the same key.

matplotlib is imported only when a chart is drawn: the alert function's cold start does not pay
for it, nor does an invocation with nothing to draw.

`Pictures` is what the channels share: one chart per (notification, finding), drawn and stored
once however many channels show it, and never in the way of a message — a chart that cannot be
drawn or stored is logged and counted (`failed`), and the message goes without it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpulse.aws import translated
from gpulse.finding import Evidence, EvidenceRow, Finding
from gpulse.notification import Notification
from gpulse.notify.links import ChartLinks

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

WIDTH_PX, HEIGHT_PX, DPI = 800, 400, 100
# Rules whose evidence rows are peers (nodes, or GPUs of one job): compared as a heatmap.
CROSS_NODE_RULES = frozenset({"imbalance", "gpu_imbalance", "network", "silent_node"})
MAX_LINES = 6  # more rows than this are a heatmap whatever the rule: lines would be a tangle
MAX_HEATMAP_ROWS = 40  # beyond: every flagged row, then the others in order up to this
MAX_ROW_LABELS = 24  # beyond: only the flagged rows are labelled
MAX_CHARTS = 10  # per notification (an Alertmanager post has one alert per finding)
MAX_ALT_CHARS = 2000  # Slack's image alt_text limit
DEFAULT_LINK_S = 604_800  # 7 days: the longest a SigV4 presigned URL may live

# Okabe & Ito (2008), the colour-blind-safe qualitative palette.
VERMILLION = "#D55E00"  # the marking colour: flagged rows, the fault span
BLUE, BLUISH_GREEN, SKY_BLUE, ORANGE = "#0072B2", "#009E73", "#56B4E9", "#E69F00"
REDDISH_PURPLE, YELLOW, BLACK = "#CC79A7", "#F0E442", "#000000"
FLAGGED_LINES = (VERMILLION, REDDISH_PURPLE, ORANGE)
OTHER_LINES = (BLUE, BLUISH_GREEN, SKY_BLUE, BLACK)
UNFLAGGED_STRIP = "#E0E0E0"
NO_DATA = "#FFFFFF"  # a heatmap cell with no sample
HEATMAP_CMAP = "cividis"

# Fixed axes boxes (figure fractions: left, bottom, width, height), not tight_layout: the same
# finding lands on the same pixels, and a test can find a row or a value where it must be.
TOP = 0.80
BOTTOM = 0.14
HEATMAP_BOX = (0.20, BOTTOM, 0.62, TOP - BOTTOM)
FLAG_STRIP_BOX = (0.825, BOTTOM, 0.018, TOP - BOTTOM)
COLORBAR_BOX = (0.885, BOTTOM, 0.018, TOP - BOTTOM)
LINES_BOX = (0.09, BOTTOM, 0.64, TOP - BOTTOM)
SPAN_ALPHA = 0.15
FONT_SIZE = 10.0


@dataclass(frozen=True)
class Picture:
    """A stored chart: where to fetch it (an expiring link), what it shows in words, its size."""

    url: str
    alt: str
    width: int = WIDTH_PX
    height: int = HEIGHT_PX


def chartable(finding: Finding) -> bool:
    """A chart is drawn for a firing finding with evidence to draw, and for a resolved one whose
    evidence shows the recovery. A resolve that still carries the last firing window's picture
    (its node silent since, or a finding from before recoveries were drawn) gets none rather than
    a misleading one."""
    ev = finding.evidence
    current = finding.state == "firing" or (ev is not None and ev.recovery and finding.ended is not None)
    return current and ev is not None and any(r.values for r in ev.rows)


def shows_recovery(finding: Finding) -> bool:
    """The chart of a resolve: the fault span ends at `ended`, the recovery follows it."""
    return finding.state == "resolved" and finding.ended is not None


def is_heatmap(finding: Finding) -> bool:
    ev = finding.evidence
    return ev is not None and (finding.rule in CROSS_NODE_RULES or len(ev.rows) > MAX_LINES)


def shown_rows(evidence: Evidence) -> list[EvidenceRow]:
    """The rows a heatmap draws, in their order: all of them up to MAX_HEATMAP_ROWS, else every
    flagged row and then the others in order up to that many."""
    rows = evidence.rows
    if len(rows) <= MAX_HEATMAP_ROWS:
        return list(rows)
    keep = {i for i, r in enumerate(rows) if r.flagged}
    for i in range(len(rows)):
        if len(keep) >= MAX_HEATMAP_ROWS:
            break
        keep.add(i)
    return [r for i, r in enumerate(rows) if i in keep]


def utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%H:%M UTC")


def alt_text(finding: Finding) -> str:
    """What the chart shows, in words (Slack's alt_text; a screen reader reads it)."""
    ev = finding.evidence
    assert ev is not None
    flagged = [r.label for r in ev.rows if r.flagged]
    kind = "Heatmap" if is_heatmap(finding) else "Line chart"
    parts = [f"{kind}: {ev.title}."]
    if flagged:
        parts.append(f"Flagged (marked in vermillion): {', '.join(flagged)}.")
    if ev.reference is not None and not is_heatmap(finding):
        parts.append(f"Dashed line: {ev.reference_label or 'reference'} {ev.reference:g}{ev.unit}.")
    if shows_recovery(finding):
        assert finding.ended is not None
        parts.append(
            f"Shaded: the fault, {utc(finding.since)} to {utc(finding.ended)}; after it, the recovery "
            f"(resolved at {utc(finding.at)})."
        )
    else:
        parts.append(f"Shaded: firing since {utc(finding.since)}.")
    text = " ".join(parts)
    return text if len(text) <= MAX_ALT_CHARS else text[: MAX_ALT_CHARS - 1] + "…"


def _matplotlib() -> None:
    """Point matplotlib's cache at a writable place in Lambda (the home directory is read-only)
    before its first import."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))


def _times(ev: Evidence, points: int) -> tuple[float, float] | None:
    """The x range in matplotlib date numbers, or None when the finding has no time axis."""
    if ev.start is None or ev.end is None or not ev.end > ev.start or points == 0:
        return None
    import matplotlib.dates as mdates

    return (
        float(mdates.date2num(datetime.fromtimestamp(ev.start, UTC))),
        float(mdates.date2num(datetime.fromtimestamp(ev.end, UTC))),
    )


def _first_data(rows: list[EvidenceRow]) -> int:
    """The first point any row has data at: the chart starts there (a cluster that began
    reporting a minute ago is drawn over that minute, not as a blank window with a sliver)."""
    starts = [next((i for i, v in enumerate(r.values) if v is not None), len(r.values)) for r in rows]
    return min(starts, default=0)


def _from(span: tuple[float, float] | None, first: int, points: int) -> tuple[float, float] | None:
    """`span` less its first `first` of `points` slices (those with no data)."""
    if span is None or not 0 < first < points:
        return span
    return (span[0] + first * (span[1] - span[0]) / points, span[1])


def _time_axis(ax: Axes, span: tuple[float, float] | None, ev: Evidence) -> None:
    import matplotlib.dates as mdates

    if span is None:
        ax.set_xlabel("window, oldest → newest")
        ax.set_xticks([])
        return
    ax.set_xlim(*span)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=7))
    short = (span[1] - span[0]) * 86400 < 180  # date numbers are days: seconds matter below 3 min
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if short else "%H:%M", tz=UTC))
    assert ev.end is not None
    ax.set_xlabel(f"time (UTC, {datetime.fromtimestamp(ev.end, UTC):%Y-%m-%d})")


def fault_span_s(finding: Finding) -> tuple[float, float] | None:
    """Where the fault held, in unix seconds, clipped to the evidence's window: `since` to the
    window's end, or to `ended` for a resolve (the recovery follows). None without a time axis
    or when the fault lies wholly outside the window."""
    ev = finding.evidence
    if ev is None or ev.start is None or ev.end is None:
        return None
    end = finding.ended if shows_recovery(finding) and finding.ended is not None else ev.end
    lo, hi = max(finding.since, ev.start), min(end, ev.end)
    return (lo, hi) if hi > lo else None


def _fault_span(finding: Finding, span: tuple[float, float] | None) -> tuple[float, float] | None:
    """`fault_span_s` in date numbers, clipped to the x range drawn."""
    fault = fault_span_s(finding)
    if span is None or fault is None:
        return None
    import matplotlib.dates as mdates

    lo, hi = (float(mdates.date2num(datetime.fromtimestamp(t, UTC))) for t in fault)
    lo, hi = max(lo, span[0]), min(hi, span[1])
    return (lo, hi) if hi > lo else None


def subtitle(finding: Finding) -> str:
    """The line under the chart's title: since when it fires, or the fault span and the recovery."""
    if shows_recovery(finding):
        assert finding.ended is not None
        return (
            f"RESOLVED {finding.title} · fault {utc(finding.since)}–{utc(finding.ended)} (shaded), "
            "recovery after it"
        )
    return f"{finding.title} · firing since {utc(finding.since)} (shaded)"


def _title(fig: Figure, finding: Finding, ev: Evidence) -> None:
    fig.text(0.01, 0.965, ev.title, fontsize=FONT_SIZE + 2, fontweight="bold", va="top")
    colour = BLUISH_GREEN if shows_recovery(finding) else VERMILLION
    fig.text(0.01, 0.895, subtitle(finding), fontsize=FONT_SIZE, color=colour, va="top")


def _fault_end(ax: Axes, finding: Finding, fault: tuple[float, float]) -> None:
    """A resolve's mark where the fault ended and the recovery begins."""
    if shows_recovery(finding):
        ax.axvline(fault[1], color=BLUISH_GREEN, linewidth=2, label="fault ended")


def _unit_label(ev: Evidence) -> str:
    return ev.unit or "value"


def _draw_heatmap(fig: Figure, finding: Finding, ev: Evidence) -> None:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    rows = shown_rows(ev)
    points = max(len(r.values) for r in rows)
    grid = np.full((len(rows), points), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r.values)] = [np.nan if v is None else v for v in r.values]
    first = _first_data(rows) if _first_data(rows) < points else 0
    grid = grid[:, first:]
    span = _from(_times(ev, points), first, points)
    extent = (span[0], span[1], len(rows), 0) if span else (first, points, len(rows), 0)
    ax = fig.add_axes(HEATMAP_BOX)
    cmap = colormaps[HEATMAP_CMAP].with_extremes(bad=NO_DATA)
    top = ev.scale_max if ev.scale_max > 0 else float(np.nanmax(grid, initial=1.0))
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=0.0,
        vmax=top,
        extent=extent,
    )
    _time_axis(ax, span, ev)
    fault = _fault_span(finding, span)
    if fault is not None:
        # hatched, not filled: a fill would change the colours the heatmap is read by
        ax.axvspan(*fault, facecolor="none", edgecolor=VERMILLION, hatch="//", linewidth=0, alpha=0.5)
        ax.axvline(fault[0], color=VERMILLION, linewidth=2)
        _fault_end(ax, finding, fault)
    label_all = len(rows) <= MAX_ROW_LABELS
    ticks = [i for i, r in enumerate(rows) if label_all or r.flagged]
    ax.set_yticks([i + 0.5 for i in ticks], [rows[i].label for i in ticks])
    for tick, i in zip(ax.get_yticklabels(), ticks, strict=True):
        if rows[i].flagged:
            tick.set_color(VERMILLION)
            tick.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    strip = fig.add_axes(FLAG_STRIP_BOX)
    flags = np.array([[1.0 if r.flagged else 0.0] for r in rows])
    strip.imshow(
        flags,
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap([UNFLAGGED_STRIP, VERMILLION]),
        vmin=0.0,
        vmax=1.0,
        extent=(0, 1, len(rows), 0),
    )
    strip.set_axis_off()
    strip.set_title("flag", fontsize=FONT_SIZE - 2, color=VERMILLION)
    bar = fig.colorbar(image, cax=fig.add_axes(COLORBAR_BOX))
    bar.set_label(_unit_label(ev), fontsize=FONT_SIZE)


def _draw_lines(fig: Figure, finding: Finding, ev: Evidence) -> None:
    import numpy as np

    ax = fig.add_axes(LINES_BOX)
    points = max(len(r.values) for r in ev.rows)
    full = _times(ev, points)
    first = _first_data(ev.rows[:MAX_LINES])
    span = _from(full, first, points)
    flagged, other = iter(FLAGGED_LINES * MAX_LINES), iter(OTHER_LINES * MAX_LINES)
    top = ev.scale_max if ev.scale_max > 0 else 0.0
    for r in ev.rows[:MAX_LINES]:
        y = np.array([np.nan if v is None else v for v in r.values], dtype=float)
        n = len(y)
        # each point is the mean of its slice of the window: drawn at the slice's middle
        x = full[0] + (np.arange(n) + 0.5) * (full[1] - full[0]) / n if full else np.arange(n) + 0.5
        colour = next(flagged) if r.flagged else next(other)
        ax.plot(
            x,
            y,
            color=colour,
            linewidth=3.0 if r.flagged else 1.8,
            label=f"{r.label}{' (flagged)' if r.flagged else ''}",
            solid_capstyle="butt",
        )
        if np.isfinite(y).any():
            top = max(top, float(np.nanmax(y)))
    if ev.reference is not None:
        ax.axhline(
            ev.reference,
            color=BLACK,
            linestyle="--",
            linewidth=1.5,
            label=f"{ev.reference_label or 'reference'} {ev.reference:g}{ev.unit}",
        )
        top = max(top, ev.reference)
    ax.set_ylim(0.0, top * 1.05 if top > (ev.scale_max if ev.scale_max > 0 else 0.0) else (top or 1.0))
    if not span:
        ax.set_xlim(first if first < points else 0, points)
    _time_axis(ax, span, ev)
    fault = _fault_span(finding, span)
    if fault is not None:
        ax.axvspan(*fault, color=VERMILLION, alpha=SPAN_ALPHA, linewidth=0, label="fault span")
        _fault_end(ax, finding, fault)
    ax.set_ylabel(_unit_label(ev))
    ax.grid(True, axis="y", color="#DDDDDD", linewidth=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=FONT_SIZE - 1, frameon=False)


def render_png(finding: Finding) -> bytes:
    """The finding's chart as PNG bytes, exactly WIDTH_PX × HEIGHT_PX. ValueError when there is
    nothing to draw (see `chartable`)."""
    if not chartable(finding):
        raise ValueError(f"finding {finding.fingerprint} ({finding.state}) has no evidence to chart")
    ev = finding.evidence
    assert ev is not None
    _matplotlib()
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(
        {
            "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs everywhere
            "font.size": FONT_SIZE,
            "hatch.color": VERMILLION,
        }
    ):
        fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, facecolor="white")
        FigureCanvasAgg(fig)
        _title(fig, finding, ev)
        if is_heatmap(finding):
            _draw_heatmap(fig, finding, ev)
        else:
            _draw_lines(fig, finding, ev)
        out = io.BytesIO()
        # no Software tag, no time: the same finding gives the same bytes
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Storage


class ChartStore:
    """Charts in an S3 bucket under `charts/<notification digest>/<fingerprint>.png`, linked by
    gpulse's own signed API links (`links`, gpulse.notify.links) that work their whole `link_s`;
    without a link key, by presigned GET URLs (at most 7 days, SigV4's limit, and in AWS only
    while the signing role's credentials last).

    The key is derived from the notification id, so a retried send of the same notification
    writes the same object again (identical bytes) and links to it."""

    PREFIX = "charts/"

    def __init__(
        self,
        bucket: str,
        *,
        link_s: int = DEFAULT_LINK_S,
        client: Any | None = None,
        links: ChartLinks | None = None,
    ) -> None:
        if not 1 <= link_s <= DEFAULT_LINK_S:
            raise ValueError(f"chart link lifetime must be 1..{DEFAULT_LINK_S} s, not {link_s}")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client("s3", config=Config(signature_version="s3v4"))
        self.bucket, self.link_s, self.client, self.links = bucket, link_s, client, links

    def key(self, notification_id: str, fingerprint: str) -> str:
        digest = hashlib.sha256(notification_id.encode()).hexdigest()[:32]
        return f"{self.PREFIX}{digest}/{fingerprint}.png"

    def put(self, key: str, png: bytes) -> str:
        """Store `png` under `key`; the link to it (signed API link, else presigned)."""
        with translated("S3"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=png,
                ContentType="image/png",
                CacheControl="private, max-age=86400",
            )
        signed = self.links.url(key) if self.links is not None else None
        if signed is not None:
            return signed
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.link_s
        )
        return url


def chart_subject(notification: Notification) -> Finding | None:
    """The finding whose chart a chat message shows: a group of one's finding, else the first
    firing alert the message lists (the one whose evidence Slack's group message shows)."""
    from gpulse.notify.evidence import listing_order

    return next((f for f in listing_order(notification) if chartable(f)), None)


class Pictures:
    """Charts for the notifications being delivered: drawn and stored at most once per
    (notification, finding) in this process, at most MAX_CHARTS per notification; None where
    there is nothing to draw or drawing or storing failed (logged, counted in `failed`)."""

    def __init__(
        self,
        store: ChartStore,
        *,
        draw: Callable[[Finding], bytes] = render_png,
        limit: int = MAX_CHARTS,
    ) -> None:
        self.store, self.draw, self.limit = store, draw, limit
        self._made: dict[tuple[str, str], Picture | None] = {}
        self.stored = 0
        self.failed = 0

    def for_finding(self, notification_id: str, finding: Finding) -> Picture | None:
        if not chartable(finding):
            return None
        key = (notification_id, finding.fingerprint)
        if key in self._made:
            return self._made[key]
        if sum(1 for n, _ in self._made if n == notification_id) >= self.limit:
            return None
        if len(self._made) > 16 * self.limit:
            self._made.clear()  # a warm container lives for hours: keep the memo small
        picture: Picture | None = None
        try:
            png = self.draw(finding)
            url = self.store.put(self.store.key(notification_id, finding.fingerprint), png)
            picture = Picture(url=url, alt=alt_text(finding))
            self.stored += 1
        except Exception as e:  # a chart never stands in the way of its message
            self.failed += 1
            logger.warning(
                "chart not attached; the message goes without it",
                extra={
                    "notification": notification_id,
                    "rule": finding.rule,
                    "fingerprint": finding.fingerprint,
                    "error": type(e).__name__,
                    "retryable": getattr(e, "retryable", None),
                },
            )
        self._made[key] = picture
        return picture

    def for_notification(self, notification: Notification) -> Picture | None:
        """The one chart a chat message carries (see `chart_subject`)."""
        subject = chart_subject(notification)
        return self.for_finding(notification.id, subject) if subject is not None else None

    def link(self, notification_id: str) -> Callable[[Finding], str | None]:
        """Per finding, the URL of its chart (Alertmanager's picture annotation)."""

        def url(finding: Finding) -> str | None:
            picture = self.for_finding(notification_id, finding)
            return picture.url if picture is not None else None

        return url

    def take_counts(self) -> tuple[int, int]:
        """(stored, failed) since the last call: what an invocation reports as metrics."""
        counts = (self.stored, self.failed)
        self.stored = self.failed = 0
        return counts
