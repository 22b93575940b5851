"""Chart links that live their whole lifetime: URLs on gpulse's own HTTP API, signed by gpulse.

A presigned S3 URL signed with a Lambda's temporary role credentials dies with them (hours), so
the alert function instead links `GET {api}/v1/charts/{name}?exp={unix}&sig={hex}`, where `name`
is the object key under `charts/` and `sig` is HMAC-SHA256, under a key held in SSM
(SecureString), over `name` and `exp`. The charts function checks the signature (constant-time)
and the expiry and serves the PNG from S3. A link works while `now < exp`.

Only names of the shape the alert function writes (`<32 hex>/<fingerprint>.png`) are ever
signed or served, and the object read is always `charts/<name>`: no link reaches outside the
prefix, whatever the path says.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from gpulse.errors import InvalidInput

logger = logging.getLogger(__name__)

PREFIX = "charts/"
ROUTE = "/v1/charts/"
# digest of the notification id / fingerprint.png — exactly what ChartStore.key writes
NAME = re.compile(r"[0-9a-f]{32}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\.png")
MIN_KEY_BYTES = 32  # a link key shorter than 256 bits is refused at start, not used
REFRESH_EVERY_S = 60.0  # a link no cached key signed re-reads the keys at most this often


class LinkRefused(InvalidInput):
    """A chart link that must not be served; `status` says why (400, 403 or 404)."""


def name_of(object_key: str) -> str:
    """The link name of an object key under `charts/`; ValueError for any other key."""
    name = object_key.removeprefix(PREFIX)
    if not object_key.startswith(PREFIX) or NAME.fullmatch(name) is None or ".." in name:
        raise ValueError(f"not a chart key: {object_key!r}")
    return name


def object_key(name: str) -> str:
    """The S3 key a link name stands for; LinkRefused(404) for a name no chart can have
    (another prefix, `..`, a path of another shape)."""
    if ".." in name or NAME.fullmatch(name) is None:
        raise LinkRefused("no such chart", status=404)
    return PREFIX + name


def signature(key: bytes, name: str, exp: int) -> str:
    """HMAC-SHA256 (hex) of `name` and `exp`, newline-separated (a name holds no newline)."""
    return hmac.new(key, f"{name}\n{exp}".encode(), hashlib.sha256).hexdigest()


def check_key(key: str) -> bytes:
    """The link key as bytes; ValueError when it is too short to be a key."""
    raw = key.strip().encode()
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"the chart link key must be at least {MIN_KEY_BYTES} characters")
    return raw


def signed_by(keys: Sequence[bytes], name: str, exp: int, sig: str) -> bool:
    """Whether `sig` is the signature of `name` and `exp` under one of `keys`. Constant-time per
    key, and every key is tried: a guesser learns nothing from how long a refusal takes."""
    given = sig.encode("utf-8", "replace")
    found = False
    for key in keys:
        found |= hmac.compare_digest(signature(key, name, exp).encode(), given)
    return found


def check_link(name: str, exp: str | None, sig: str | None) -> tuple[str, int, str]:
    """(the S3 key, exp, sig) of a well-formed link, or LinkRefused: 404 for a name outside the
    charts, 400 for a link without `exp`/`sig` or with an `exp` that is not unix seconds."""
    obj = object_key(name)
    if not exp or not sig:
        raise LinkRefused("a chart link needs its exp and sig parameters", status=400)
    if not exp.isdigit() or len(exp) > 12:
        raise LinkRefused("exp must be unix seconds", status=400)
    return obj, int(exp), sig


def verify(keys: Sequence[bytes], name: str, exp: str | None, sig: str | None, *, now: float) -> str:
    """The S3 key a signed link may read, or LinkRefused: 404 for a name outside the charts,
    400 for a malformed link, 403 for a signature under none of `keys` or an expired link.
    `keys` are the current link key and, after a rotation, the one before it (docs/deploy.md)."""
    obj, expires, signed = check_link(name, exp, sig)
    if not signed_by(keys, name, expires, signed):
        raise LinkRefused("this chart link's signature is not valid", status=403)
    if not now < expires:
        raise LinkRefused("this chart link has expired; the alert's text still stands", status=403)
    return obj


@dataclass
class ChartLinks:
    """Signs links to stored charts on `api_url` (the HTTP API's base URL), valid `link_s`.

    `read_key` gives the link key (from SSM, cached by its provider), or None when the deployer
    has not put one: then (or for a key under MIN_KEY_BYTES) `url` returns None, and the caller
    falls back to a presigned URL; that is logged once per container, not once per chart."""

    api_url: str
    read_key: Callable[[], str | None]
    link_s: int
    clock: Callable[[], float] = time.time
    _warned: bool = False

    def url(self, object_key: str) -> str | None:
        try:
            key = check_key(self.read_key() or "")
        except ValueError:  # none put, or one too short to be a key: the deployer's step
            if not self._warned:
                self._warned = True
                logger.warning(
                    "no chart link key in SSM: charts are linked by presigned URLs, which stop "
                    "working when the function's credentials expire (docs/deploy.md)"
                )
            return None
        name = name_of(object_key)
        exp = int(self.clock()) + self.link_s
        query = urlencode({"exp": exp, "sig": signature(key, name, exp)})
        return f"{self.api_url.rstrip('/')}{ROUTE}{quote(name)}?{query}"


@dataclass
class LinkKeys:
    """The keys the charts function accepts: the current link key and, after a rotation, the one
    before it until its `until` — at `{param}.previous` as `{"secret": …, "until": unix}`, the format
    node secrets use (docs/deploy.md), so links sent before a rotation live their whole lifetime.

    `read(name, fresh)` is the cached SSM read (None for a parameter that does not exist). The
    alert function may sign with a new key before this container's cache has seen it, so a link
    that no cached key signed re-reads both once — at most every `refresh_s`, whoever asks, so a
    flood of forged links costs SSM two reads a minute per container."""

    param: str
    read: Callable[[str, bool], str | None]
    clock: Callable[[], float] = time.monotonic
    refresh_s: float = REFRESH_EVERY_S
    _refreshed_at: float = -math.inf

    def keys(self, now: float, *, fresh: bool = False) -> list[bytes]:
        """The accepted keys at `now` (unix s), current first; LinkRefused(403) when there is no
        usable current key (the deployment's step, docs/deploy.md)."""
        from gpulse.secrets import PREVIOUS_SUFFIX, parse_previous  # boto3: only where keys are read

        try:
            current = check_key(self.read(self.param, fresh) or "")
        except ValueError:
            logger.warning("no usable chart link key in SSM: %s", self.param)
            raise LinkRefused("chart links are not enabled on this deployment", status=403) from None
        keys = [current]
        stored = self.read(self.param + PREVIOUS_SUFFIX, fresh)
        previous = parse_previous(stored) if stored is not None else None
        if previous is not None and now < previous[1] and len(previous[0]) >= MIN_KEY_BYTES:
            keys.append(previous[0])
        return keys

    def verify(self, name: str, exp: str | None, sig: str | None, *, now: float) -> str:
        """`verify` under the accepted keys, re-read once (rate-limited) when none signed it."""
        _, expires, signed = check_link(name, exp, sig)
        keys = self.keys(now)
        if not signed_by(keys, name, expires, signed) and self.clock() - self._refreshed_at >= self.refresh_s:
            self._refreshed_at = self.clock()
            keys = self.keys(now, fresh=True)
        return verify(keys, name, exp, sig, now=now)
