"""The local stand-in for Slack and Jandi: a real HTTP server on 127.0.0.1 that checks what the
services check, records what they would show, and prints it legibly.

    POST <url>/slack/<channel>   Block Kit limits checked → 200 "ok", else 400 "invalid_payload"
    POST <url>/jandi/<channel>   Jandi's Accept/Content-Type and `body` checked → 200 {}, else 400
    GET  <url>/messages          every accepted message, as JSON
    POST <url>/_control/fail     {"kind", "status", "count", "retry_after"}: fail the next requests

`<url>` is the sink's `url`: `http://127.0.0.1:<port>/<token>`, a random token per sink, as a real
webhook URL carries a secret path. A request under any other path is 404: a process still
posting to a webhook of an earlier (or another) sink that has since lost its port to this one is
refused, never recorded as this sink's message.

Pictures: like Slack and Jandi, the sink fetches every image a message links to (a Slack image
block's `image_url`, a Jandi `connectInfo[].imageUrl`) and checks it is a PNG of the size gpulse
states for its charts (signature, then IHDR width × height). A message is recorded with its text
as `payload` (the picture parts taken out, so it reads as the text alone), what arrived as `raw`,
and one entry per picture in `pictures`; with `pictures_dir` set, each fetched image is written
there. Only loopback URLs are fetched: the local stack never reaches out.

Run alone with `python -m devstack.chat_sink --port 8025`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import ipaddress
import json
import re
import secrets
import signal
import struct
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from gpulse.notify.chart import HEIGHT_PX, WIDTH_PX

KINDS = ("slack", "jandi")
JANDI_ACCEPT = "application/vnd.tosslab.jandi-v2+json"
SLACK_MAX_BLOCKS = 50
SLACK_MAX_SECTION_CHARS = 3000
SLACK_MAX_FIELDS = 10
SLACK_MAX_FIELD_CHARS = 2000
SLACK_MAX_HEADER_CHARS = 150
SLACK_MAX_CONTEXT_ELEMENTS = 10
SLACK_MAX_BLOCK_ID_CHARS = 255
LISTED_ALERT_BLOCK_ID = "alert-"  # gpulse's block_id for one alert listed in a group message
LISTED_MARKS = ("🔴", "🟠", "🔵", "✅")  # how a Jandi connectInfo title of a listed alert starts
# What Slack answers for each status, so a fault looks like the real thing to a client.
SLACK_ERROR_BODY = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "channel_not_found",
    410: "channel_is_archived",
    429: "rate_limited",
}
WIDTH = 96  # of the printed block: fits a 100-column terminal
SLACK_MAX_IMAGE_URL_CHARS = 3000
SLACK_MAX_ALT_TEXT_CHARS = 2000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURE_SIZE = (WIDTH_PX, HEIGHT_PX)  # what gpulse states its charts are
PICTURE_FETCH_TIMEOUT_S = 5.0
PICTURE_MAX_BYTES = 5 * 1024 * 1024


class Invalid(Exception):
    """A payload the real service would refuse; the message says why."""


def check_slack(payload: Any) -> None:
    """Raise Invalid where Slack would answer 400 invalid_payload."""
    if not isinstance(payload, dict):
        raise Invalid("payload is not a JSON object")
    blocks = payload.get("blocks")
    text = payload.get("text")
    if not (isinstance(text, str) and text.strip()) and not blocks:
        raise Invalid("neither text nor blocks")
    if blocks is None:
        return
    if not isinstance(blocks, list):
        raise Invalid("blocks is not a list")
    if len(blocks) > SLACK_MAX_BLOCKS:
        raise Invalid(f"{len(blocks)} blocks > {SLACK_MAX_BLOCKS}")
    block_ids: set[str] = set()
    for n, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise Invalid(f"block {n} has no type")
        if "block_id" in block:
            block_id = block["block_id"]
            if not isinstance(block_id, str) or not 0 < len(block_id) <= SLACK_MAX_BLOCK_ID_CHARS:
                raise Invalid(f"block {n}: block_id must be 1 to {SLACK_MAX_BLOCK_ID_CHARS} characters")
            if block_id in block_ids:
                raise Invalid(f"block {n}: block_id {block_id!r} is not unique")
            block_ids.add(block_id)
        if block["type"] == "header":
            t = block.get("text")
            if not isinstance(t, dict) or t.get("type") != "plain_text" or not isinstance(t.get("text"), str):
                raise Invalid(f"block {n}: header text must be plain_text")
            if len(t["text"]) > SLACK_MAX_HEADER_CHARS:
                raise Invalid(f"block {n}: header {len(t['text'])} chars > {SLACK_MAX_HEADER_CHARS}")
        elif block["type"] == "section":
            t, fields = block.get("text"), block.get("fields")
            if t is None and not fields:
                raise Invalid(f"block {n}: section needs text or fields")
            if t is not None and (not isinstance(t, dict) or not isinstance(t.get("text"), str)):
                raise Invalid(f"block {n}: section text is not a text object")
            if t is not None and len(t["text"]) > SLACK_MAX_SECTION_CHARS:
                raise Invalid(f"block {n}: section text {len(t['text'])} chars > {SLACK_MAX_SECTION_CHARS}")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > SLACK_MAX_FIELDS:
                    raise Invalid(f"block {n}: fields must be a list of at most {SLACK_MAX_FIELDS}")
                for f in fields:
                    if not isinstance(f, dict) or not isinstance(f.get("text"), str):
                        raise Invalid(f"block {n}: a field is not a text object")
                    if len(f["text"]) > SLACK_MAX_FIELD_CHARS:
                        raise Invalid(f"block {n}: field {len(f['text'])} chars > {SLACK_MAX_FIELD_CHARS}")
        elif block["type"] == "image":
            url, alt = block.get("image_url"), block.get("alt_text")
            if not isinstance(url, str) or not 0 < len(url) <= SLACK_MAX_IMAGE_URL_CHARS:
                raise Invalid(f"block {n}: image_url must be 1 to {SLACK_MAX_IMAGE_URL_CHARS} characters")
            if not isinstance(alt, str) or not 0 < len(alt) <= SLACK_MAX_ALT_TEXT_CHARS:
                raise Invalid(f"block {n}: alt_text must be 1 to {SLACK_MAX_ALT_TEXT_CHARS} characters")
        elif block["type"] == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= SLACK_MAX_CONTEXT_ELEMENTS:
                raise Invalid(f"block {n}: context needs 1 to {SLACK_MAX_CONTEXT_ELEMENTS} elements")
            for e in elements:
                if not isinstance(e, dict) or not isinstance(e.get("type"), str):
                    raise Invalid(f"block {n}: a context element has no type")
                if e["type"] in ("mrkdwn", "plain_text"):
                    if not isinstance(e.get("text"), str):
                        raise Invalid(f"block {n}: a context text element has no text")
                    if len(e["text"]) > SLACK_MAX_SECTION_CHARS:
                        raise Invalid(
                            f"block {n}: context text {len(e['text'])} chars > {SLACK_MAX_SECTION_CHARS}"
                        )


def check_jandi(payload: Any, accept: str | None, content_type: str | None) -> None:
    """Raise Invalid where Jandi would refuse the request."""
    if accept != JANDI_ACCEPT:
        raise Invalid(f"Accept must be {JANDI_ACCEPT}")
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise Invalid("Content-Type must be application/json")
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("body"), str)
        or not payload["body"].strip()
    ):
        raise Invalid("body is required")
    info = payload.get("connectInfo", [])
    if not isinstance(info, list) or not all(isinstance(i, dict) for i in info):
        raise Invalid("connectInfo must be a list of objects")


# ---- pictures --------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when `data` is not a PNG."""
    if len(data) < 24 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def picture_urls(kind: str, payload: dict[str, Any]) -> list[str]:
    """The image URLs a message links to, in order."""
    if kind == "slack":
        items = payload.get("blocks") or []
        return [
            b["image_url"] for b in items if b.get("type") == "image" and isinstance(b.get("image_url"), str)
        ]
    items = payload.get("connectInfo") or []
    return [i["imageUrl"] for i in items if isinstance(i, dict) and isinstance(i.get("imageUrl"), str)]


def without_pictures(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The message as text alone: Slack's image blocks, Jandi's entries that carry an image, taken out."""
    if kind == "slack" and "blocks" in payload:
        return {**payload, "blocks": [b for b in payload["blocks"] if b.get("type") != "image"]}
    if kind == "jandi" and "connectInfo" in payload:
        return {**payload, "connectInfo": [i for i in payload["connectInfo"] if "imageUrl" not in i]}
    return payload


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def fetch_picture(url: str, size: tuple[int, int] = PICTURE_SIZE) -> tuple[dict[str, Any], bytes]:
    """GET `url` as a chat service would and check it: {"url", "status", "bytes", "width",
    "height", "ok", "error"} and the body (b"" when it could not be fetched)."""
    result: dict[str, Any] = {"url": url, "status": None, "bytes": 0, "width": None, "height": None}
    body = b""
    if not _loopback(url):
        return result | {"ok": False, "error": "not fetched: the local sink fetches loopback URLs only"}, body
    try:
        with urllib.request.urlopen(
            url, timeout=PICTURE_FETCH_TIMEOUT_S
        ) as resp:  # loopback only (checked above)
            result["status"] = resp.status
            body = resp.read(PICTURE_MAX_BYTES + 1)
    except urllib.error.HTTPError as e:
        return result | {"status": e.code, "ok": False, "error": f"answered {e.code}"}, b""
    except (urllib.error.URLError, OSError) as e:
        return result | {"ok": False, "error": f"not fetched: {e}"}, b""
    result["bytes"] = len(body)
    dims = png_size(body)
    if dims is not None:
        result["width"], result["height"] = dims
    if dims is None:
        error = "not a PNG"
    elif dims != size:
        error = f"{dims[0]}×{dims[1]}, not the stated {size[0]}×{size[1]}"
    elif len(body) > PICTURE_MAX_BYTES:
        error = f"over {PICTURE_MAX_BYTES} bytes"
    else:
        error = None
    return result | {"ok": error is None, "error": error}, body


# ---- printing --------------------------------------------------------------------------------


class _Paint:
    """ANSI styles, or nothing when the output is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    def bold(self, text: str) -> str:
        return self(text, "1")

    def dim(self, text: str) -> str:
        return self(text, "2")


SLACK_EMOJI_COLOUR = {
    "🔴": "38;2;224;30;90",
    "🟠": "38;2;236;178;46",
    "🔵": "38;2;54;197;240",
    "✅": "38;2;46;182;125",
}


def _hex_colour(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"#[0-9A-Fa-f]{6}", value):
        r, g, b = (int(value[i : i + 2], 16) for i in (1, 3, 5))
        return f"38;2;{r};{g};{b}"
    return "37"


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    out: list[str] = []
    for para in text.split("\n"):
        out.extend(textwrap.wrap(para, width, initial_indent=indent, subsequent_indent=indent) or [indent])
    return out


def _code(text: str, paint: _Paint) -> list[str]:
    """A code block verbatim, indented; rows flagged with ◀ in bold so they stand out."""
    return [
        "  " + (paint.bold(line) if line.endswith("◀") else line) for line in text.strip("\n").split("\n")
    ]


def _mrkdwn(text: str, paint: _Paint, width: int, indent: str = "") -> list[str]:
    """Slack mrkdwn as terminal lines: code blocks kept verbatim (indented), *bold* painted."""
    lines: list[str] = []
    for n, part in enumerate(_unescape(text).split("```")):
        if n % 2:  # inside a code block
            lines.extend(_code(part, paint))
            continue
        part = part.strip("\n")
        if not part:
            continue
        for line in _wrap(part, width, indent):
            lines.append(_bold(line, paint).replace("`", ""))
    return lines


def _bold(text: str, paint: _Paint) -> str:
    return re.sub(r"\*([^*\n]+)\*", lambda m: paint.bold(m.group(1)), text)


def _one_line(head: str, rest: str, width: int) -> str:
    """`head — rest` on one line of at most `width` characters, shortened at a word with `…`."""
    text = f"{head} — {rest}" if rest else head
    return textwrap.shorten(text, width, placeholder=" …")


def _field(title: str, body: str, width: int, paint: _Paint) -> list[str]:
    """`Title     first line` with the rest aligned under the first line."""
    pad = 10
    body_lines = _wrap(body, width - pad)
    head = paint.bold(title.ljust(pad)) if len(title) < pad else paint.bold(title) + " "
    return [head + body_lines[0]] + [" " * pad + line for line in body_lines[1:]]


def slack_text(
    payload: dict[str, Any], paint: _Paint, accent: str = "37", width: int = WIDTH - 2
) -> list[str]:
    """A Slack payload as the lines someone would read in the channel. The alerts a group
    message lists (sections with block_id `alert-<n>`) read one line each."""
    blocks = payload.get("blocks") or []
    if not blocks:
        return _wrap(_unescape(str(payload.get("text", ""))), width)
    out: list[str] = []
    listing = False  # the previous block was a listed alert: no blank line between them
    for block in blocks:
        kind = block.get("type")
        listed = bool(str(block.get("block_id", "")).startswith(LISTED_ALERT_BLOCK_ID) and block.get("text"))
        if listed != listing and out and out[-1] != "":  # a blank line around the list, none inside
            out.append("")
        listing = listed
        if listed:
            head, _, rest = _unescape(block["text"]["text"]).partition("\n")
            out.append(_bold(_one_line(head, rest.replace("\n", " · "), width), paint))
        elif kind == "header":
            out.append(paint(block["text"]["text"], f"1;{accent}"))
        elif kind == "section":
            if out and out[-1] != "":
                out.append("")
            if block.get("text"):
                out.extend(_mrkdwn(block["text"]["text"], paint, width))
            for f in block.get("fields") or []:
                title, _, body = _unescape(f["text"]).partition("\n")
                out.extend(_field(title.strip("*"), body, width, paint))
        elif kind == "context":
            if out and out[-1] != "":
                out.append("")
            texts = [_unescape(e.get("text", "")) for e in block.get("elements", [])]
            out.extend(paint.dim(line) for line in _wrap("  ".join(texts), width))
        elif kind == "divider":
            out.append(paint.dim("─" * width))
        else:
            out.append(paint.dim(f"[{kind} block]"))
    return out


def jandi_text(
    payload: dict[str, Any], paint: _Paint, accent: str = "37", width: int = WIDTH - 2
) -> list[str]:
    """A Jandi payload as the lines someone would read in the topic. The alerts a group message
    lists (titles starting with a severity emoji or ✅) read one line each."""
    out = [paint(line, f"1;{accent}") for line in _wrap(str(payload.get("body", "")), width)]
    info = payload.get("connectInfo") or []
    if info:
        out.append("")
    for item in info:
        title, desc = str(item.get("title", "")), str(item.get("description", ""))
        if title.startswith("…"):  # what a group message left out: every word of it matters
            out.extend(_wrap(f"{title} — {desc}", width))
        elif title.startswith(LISTED_MARKS):
            out.append(_one_line(title, desc.replace("\n", " · "), width))
        elif len(title) < 10:
            out.extend(_field(title, desc, width, paint))
        else:  # a long title heads a block of its own (the evidence table)
            out.extend(["", paint.bold(title), *_code(desc, paint)])
            out.append("")
    return out


def render_record(record: dict[str, Any], colour: bool = False) -> str:
    """One recorded message as a ruled block of at most WIDTH columns (plus wide glyphs)."""
    paint = _Paint(colour)
    payload = record["payload"]
    if record["kind"] == "slack":
        header = next(
            (b["text"]["text"] for b in payload.get("blocks") or [] if b.get("type") == "header"), ""
        )
        accent = SLACK_EMOJI_COLOUR.get(header[:1], "37")
        lines = slack_text(payload, paint, accent)
    else:
        accent = _hex_colour(payload.get("connectColor"))
        lines = jandi_text(payload, paint, accent)
    for p in record.get("pictures") or []:
        if p["ok"]:
            where = f" → {p['file']}" if p.get("file") else ""
            lines += [
                "",
                f"🖼  chart: {p['width']}×{p['height']} PNG, {p['bytes'] / 1024:.1f} KiB, fetched{where}",
            ]
        else:
            lines += ["", f"🖼  chart: {p['error']}"]
    stamp = datetime.fromtimestamp(record["received_at"], UTC).strftime("%H:%M:%S UTC")
    title = f" {record['kind']} · #{record['channel']} "
    top = "╭─" + title + "─" * max(WIDTH - 5 - len(title) - len(stamp), 2) + f" {stamp} ─"
    rail = paint("│", accent)
    body = [f"{rail} {line}" if line else rail for line in lines]
    return "\n".join([paint(top, accent), *body, paint("╰" + "─" * (WIDTH - 1), accent)])


# ---- the server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a keep-alive connection must not hold up stop()
    sink: ChatSink


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services; every answer has a length

    def log_message(self, format: str, *args: Any) -> None:  # the sink prints its own lines
        pass

    def _answer(self, status: int, body: str, content_type: str, extra: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, doc: Any, extra: dict[str, str] | None = None) -> None:
        self._answer(status, json.dumps(doc, ensure_ascii=False), "application/json", extra)

    def _parts(self) -> list[str] | None:
        """The path's parts after this sink's token; None for a path under another token."""
        parts = self.path.split("?")[0].strip("/").split("/")
        return parts[1:] if parts[0] == self.server.sink.token else None

    def do_GET(self) -> None:
        if self._parts() == ["messages"]:
            self._json(200, self.server.sink.messages())
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self._parts()
        if parts is None:
            self._json(404, {"error": "not found"})
        elif parts == ["_control", "fail"]:
            self._control(raw)
        elif len(parts) == 2 and parts[0] in KINDS and parts[1]:
            self._deliver(parts[0], parts[1], raw)
        else:
            self._json(404, {"error": "not found"})

    def _control(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
            self.server.sink.fail_next(
                doc["kind"], int(doc["status"]), int(doc.get("count", 1)), doc.get("retry_after")
            )
        except (ValueError, KeyError, TypeError) as e:
            self._json(400, {"error": f"bad control request: {e}"})
            return
        self._json(200, {})

    def _deliver(self, kind: str, channel: str, raw: bytes) -> None:
        sink = self.server.sink
        fault = sink._take_fault(kind)
        if fault is not None:
            status, retry_after = fault
            sink._attempted(kind, channel, status)
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
            sink._note(f"✗ {kind} #{channel}: answered {status} (injected fault)")
            if kind == "slack":
                self._answer(status, SLACK_ERROR_BODY.get(status, "internal_error"), "text/plain", extra)
            else:
                self._json(status, {"code": status, "msg": "injected fault"}, extra)
            return
        try:
            payload = json.loads(raw)
            if kind == "slack":
                check_slack(payload)
            else:
                check_jandi(payload, self.headers.get("Accept"), self.headers.get("Content-Type"))
        except (ValueError, Invalid) as e:  # json.JSONDecodeError is a ValueError
            why = str(e) if isinstance(e, Invalid) else "body is not JSON"
            sink._attempted(kind, channel, 400)
            sink._note(f"✗ {kind} #{channel}: refused, {why}")
            if kind == "slack":
                self._answer(400, "invalid_payload", "text/plain")
            else:
                self._json(400, {"code": 400, "msg": why})
            return
        sink._attempted(kind, channel, 200)
        sink._record(kind, channel, payload, dict(self.headers.items()))
        if kind == "slack":
            self._answer(200, "ok", "text/plain")
        else:
            self._json(200, {})


class ChatSink:
    """A local Slack/Jandi webhook receiver on a real socket (127.0.0.1 only by default).

    `url` + "/slack/<channel>" or "/jandi/<channel>" is a webhook URL. Accepted messages are
    recorded as {"kind", "channel", "payload", "raw", "pictures", "headers", "received_at"} and
    printed to `out` (ANSI colour only when `out` is a terminal; None prints nothing): `payload`
    is the text (pictures taken out), `raw` what arrived, `pictures` what each linked image
    turned out to be (see `fetch_picture`; "file" where it was written under `pictures_dir`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        out: TextIO | None = sys.stdout,
        *,
        clock: Callable[[], float] = time.time,
        pictures_dir: Path | None = None,
        picture_size: tuple[int, int] = PICTURE_SIZE,
    ) -> None:
        self._host, self._port = host, port
        self.token = secrets.token_hex(8)  # the path every URL of this sink starts with
        self.pictures_dir = pictures_dir  # where fetched pictures are written (None: kept nowhere)
        self.picture_size = picture_size
        self._out = out
        self._clock = clock
        self._messages: list[dict[str, Any]] = []
        self._attempts: list[tuple[str, str, int]] = []
        self._faults: dict[str, deque[tuple[int, float | None]]] = {k: deque() for k in KINDS}
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        isatty = getattr(out, "isatty", None)
        self._colour = bool(isatty and isatty())

    def start(self) -> ChatSink:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.sink = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="chat-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> ChatSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>/<token>` of the running sink."""
        if self._server is None:
            raise RuntimeError("chat sink is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{self.token}"

    def messages(self) -> list[dict[str, Any]]:
        """A copy of every accepted message, oldest first."""
        with self._cond:
            return copy.deepcopy(self._messages)

    def attempts(self) -> list[tuple[str, str, int]]:
        """(kind, channel, status answered) for every webhook request, accepted or not."""
        with self._cond:
            return list(self._attempts)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `count` messages arrived (or `timeout_s` passed); return them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._messages) >= count, timeout=timeout_s)
        return self.messages()

    def clear(self) -> None:
        """Forget recorded messages and pending faults."""
        with self._cond:
            self._messages.clear()
            self._attempts.clear()
            for q in self._faults.values():
                q.clear()

    def fail_next(self, kind: str, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `count` requests of `kind` with `status` (and Retry-After if given),
        without checking or recording them. Calls queue up: 500 twice, then 429 once, …"""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        with self._cond:
            self._faults[kind].extend([(status, retry_after)] * count)

    def _take_fault(self, kind: str) -> tuple[int, float | None] | None:
        with self._cond:
            return self._faults[kind].popleft() if self._faults[kind] else None

    def _attempted(self, kind: str, channel: str, status: int) -> None:
        with self._cond:
            self._attempts.append((kind, channel, status))

    def _pictures(self, kind: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Fetch and check each linked picture (outside the lock: a fetch may take a moment)."""
        out = []
        for url in picture_urls(kind, payload):
            result, body = fetch_picture(url, self.picture_size)
            if body and self.pictures_dir is not None:
                self.pictures_dir.mkdir(parents=True, exist_ok=True)
                # named by content: the same chart seen by Slack and Jandi is one file
                path = self.pictures_dir / f"{hashlib.sha256(body).hexdigest()[:16]}.png"
                path.write_bytes(body)
                result["file"] = str(path)
            out.append(result)
        return out

    def _record(self, kind: str, channel: str, payload: Any, headers: dict[str, str]) -> None:
        pictures = self._pictures(kind, payload)
        record = {
            "kind": kind,
            "channel": channel,
            "payload": without_pictures(kind, payload),
            "raw": payload,
            "pictures": pictures,
            "headers": headers,
            "received_at": self._clock(),
        }
        with self._cond:
            self._messages.append(record)
            self._cond.notify_all()
            if self._out is not None:  # under the lock, so two messages never interleave
                self._out.write(render_record(record, self._colour) + "\n\n")
                self._out.flush()

    def _note(self, line: str) -> None:
        if self._out is None:
            return
        with self._cond:
            self._out.write(_Paint(self._colour).dim(line) + "\n")
            self._out.flush()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Local Slack/Jandi webhook sink for gpulse.")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ChatSink(port=args.port) as sink:
        print(f"chat sink: POST {sink.url}/slack/<channel> or {sink.url}/jandi/<channel>", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
