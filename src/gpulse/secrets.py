"""Secrets in SSM Parameter Store (SecureString), cached; values are never logged.

Webhook URLs are read through Powertools Parameters (`SsmParameters`). Node signing secrets
(`SsmNodeSecrets`) live at `{prefix}/{cluster}/{node}`; during a rotation the secret before it
waits at the sibling `{prefix}/{cluster}/{node}.previous` as JSON `{"secret": "...", "until":
<unix seconds>}` and is accepted while now < until (docs/operations.md, "Rotating a node's
secret"). `gpulse nodes` (gpulse.cli.nodes) writes both.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import boto3
from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import BotoCoreError, ClientError

from gpulse.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

SECRET_MAX_AGE_S = 900  # SSM allows 40 reads/s by default; a long cache keeps a big fleet under it
UNKNOWN_NODE_MAX_AGE_S = 60  # a flood from an unregistered node costs one SSM read a minute
REFRESH_EVERY_S = 30  # a signature no cached secret matches re-reads SSM at most this often per node
MAX_CACHED = 10_000  # entries per cache: names a flood invents cannot grow memory without bound
PREVIOUS_SUFFIX = ".previous"  # the sibling parameter that holds the secret before a rotation

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A dict that keeps at most `max_entries`, forgetting the least recently used first.

    Fifteen lines do not justify a new dependency in the Lambda layer (cachetools); expiry is
    the caller's, from the time it stores with each value."""

    def __init__(self, max_entries: int = MAX_CACHED) -> None:
        if max_entries < 1:
            raise ValueError("a cache holds at least one entry")
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


def _not_found(e: GetParameterError) -> bool:
    # Powertools wraps the SDK error; its ClientError stays reachable as the exception's context.
    ctx = e.__cause__ or e.__context__
    return isinstance(ctx, ClientError) and ctx.response.get("Error", {}).get("Code") == "ParameterNotFound"


class SsmParameters:
    """Decrypted SSM parameters by name, cached; `None` for a name that does not exist."""

    def __init__(
        self,
        provider: SSMProvider | None = None,
        *,
        max_age: int = SECRET_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider or SSMProvider()
        self.max_age = max_age
        self.clock = clock
        self._missing: BoundedCache[str, float] = BoundedCache()

    def get(self, name: str, fresh: bool = False) -> str | None:
        """The value, from the cache unless `fresh` (the caller rate-limits those reads)."""
        missing_at = self._missing.get(name)
        if not fresh and missing_at is not None and self.clock() - missing_at < UNKNOWN_NODE_MAX_AGE_S:
            return None
        try:
            value: Any = self.provider.get(name, decrypt=True, max_age=self.max_age, force_fetch=fresh)
        except GetParameterError as e:
            if _not_found(e):
                self._missing.put(name, self.clock())
                return None
            raise StoreError(f"could not read SSM parameter {name}") from None
        self._missing.pop(name)
        return str(value)


@dataclass(frozen=True)
class NodeKeys:
    """A registered node's secrets: the current one, and the one before a rotation with the unix
    time it stops being accepted."""

    current: bytes
    previous: bytes | None = None
    previous_until: float = -math.inf

    def accepted(self, now: float) -> list[bytes]:
        """The secrets a request signed at `now` may use."""
        if self.previous is not None and now < self.previous_until:
            return [self.current, self.previous]
        return [self.current]


@dataclass(frozen=True)
class _Entry:
    keys: NodeKeys | None  # None: no such node
    fetched_at: float  # on the cache's (monotonic) clock
    refreshed_at: float  # when a refresh last forced a read (rate limit), -inf if never


def parse_previous(value: str) -> tuple[bytes, float] | None:
    """The `.previous` parameter's (secret, until), or None when it is not that JSON object (a
    hand-written value is ignored rather than trusted)."""
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    secret, until = doc.get("secret"), doc.get("until")
    if not isinstance(secret, str) or not secret.strip():
        return None
    if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
        return None
    return secret.strip().encode(), float(until)


class SsmNodeSecrets:
    """The ingest SecretSource: each node's current and previous secret under `prefix`.

    Read with the SSM client directly rather than Powertools' provider: the two parameters of a
    node are cached as one entry, a node without a `.previous` (nearly all) must not cost a read
    per request, unknown nodes are remembered briefly, and the cache is bounded."""

    def __init__(
        self,
        prefix: str,
        *,
        client: SSMClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = SECRET_MAX_AGE_S,
        unknown_max_age: float = UNKNOWN_NODE_MAX_AGE_S,
        refresh_every: float = REFRESH_EVERY_S,
        max_entries: int = MAX_CACHED,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.client: SSMClient = client or boto3.client("ssm")
        self.clock = clock
        self.max_age = max_age
        self.unknown_max_age = unknown_max_age
        self.refresh_every = refresh_every
        self._cache: BoundedCache[tuple[str, str], _Entry] = BoundedCache(max_entries)

    def name(self, cluster: str, node: str) -> str:
        return f"{self.prefix}/{cluster}/{node}"

    def node_keys(self, cluster: str, node: str, *, refresh: bool = False) -> NodeKeys | None:
        """The node's secrets, or None if it is not registered. `refresh`: read SSM again unless
        this node was refreshed in the last `refresh_every` seconds (a rotated secret is seen at
        once; a flood of bad signatures costs one read per node per interval)."""
        now = self.clock()
        entry = self._cache.get((cluster, node))
        refreshed = -math.inf
        if entry is not None:
            refreshed = entry.refreshed_at
            max_age = self.max_age if entry.keys is not None else self.unknown_max_age
            if now - entry.fetched_at < max_age:  # fresh: only a refresh that is due reads again
                if not (refresh and now - entry.refreshed_at >= self.refresh_every):
                    return entry.keys
                refreshed = now
        keys = self._fetch(cluster, node)
        self._cache.put((cluster, node), _Entry(keys, now, refreshed))
        return keys

    def _fetch(self, cluster: str, node: str) -> NodeKeys | None:
        current = self._read(self.name(cluster, node))
        if current is None or not current.strip():
            return None
        stored = self._read(self.name(cluster, node) + PREVIOUS_SUFFIX)
        previous = parse_previous(stored) if stored is not None else None
        if previous is None:
            return NodeKeys(current.strip().encode())
        return NodeKeys(current.strip().encode(), previous[0], previous[1])

    def _read(self, name: str) -> str | None:
        try:
            return self.client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            # Throttling, KMS or access errors: the node may be fine; a later retry (503) may pass.
            raise StoreError(f"could not read SSM parameter {name}") from None
        except BotoCoreError:
            raise StoreError(f"could not read SSM parameter {name}") from None
