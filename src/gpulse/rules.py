"""Per-rule parameters from the config table (`pk = "rule"`, `sk = rule name`, `params` JSON).

Defaults live in the detector catalogue; an item here overrides some of them. A malformed item
never stops alerting: it is logged and the last good parameters (or the defaults) stay in force.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from gpulse.detect.catalogue import CATALOGUE, params_for
from gpulse.errors import InvalidInput, StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
RULE_PK = "rule"
CACHE_S = 30.0


class RuleParams:
    """Merged, validated parameters per rule, cached for `cache_s`."""

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_s: float = CACHE_S,
    ) -> None:
        self.table = table_name
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock = clock
        self.cache_s = cache_s
        self._loaded_at: float | None = None
        self._good: dict[str, dict[str, Any]] = {name: params_for(name, None) for name in CATALOGUE}

    def all(self) -> dict[str, dict[str, Any]]:
        if self._loaded_at is None or self.clock() - self._loaded_at >= self.cache_s:
            self._reload()
        return dict(self._good)

    def _reload(self) -> None:
        try:
            page = self.client.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": RULE_PK}},
            )
        except ClientError as e:
            # keep alerting on the last good parameters rather than stopping
            logger.warning("rule config unreadable: %s", e.response.get("Error", {}).get("Code"))
            return
        self._loaded_at = self.clock()
        seen = set()
        for item in page.get("Items", []):
            name = item["sk"]["S"]
            seen.add(name)
            try:
                overrides = json.loads(item.get("params", {}).get("S", "{}"))
                if name not in CATALOGUE:
                    raise ValueError(f"no detector is named {name!r}")
                if not isinstance(overrides, dict):
                    raise ValueError("params must be a JSON object")
                self._good[name] = params_for(name, overrides)
            except ValueError as e:
                logger.error("rule config rejected, keeping last good: rule=%s reason=%s", name, e)
        for name in CATALOGUE:
            if name not in seen:
                self._good[name] = params_for(name, None)


def put_rule_params(
    table_name: str, rule: str, overrides: dict[str, Any], *, who: str, client: DynamoDBClient | None = None
) -> None:
    """Validate and store overrides for one rule (the CLI's and the demo's write path)."""
    if rule not in CATALOGUE:
        raise InvalidInput(f"no detector is named {rule!r}; known: {', '.join(sorted(CATALOGUE))}")
    try:
        params_for(rule, overrides)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    ddb = client or boto3.client("dynamodb")
    try:
        ddb.put_item(
            TableName=table_name,
            Item={
                "pk": {"S": RULE_PK},
                "sk": {"S": rule},
                "params": {"S": json.dumps(overrides, sort_keys=True)},
                "updated_by": {"S": who},
                "updated_at": {"N": repr(time.time())},
            },
        )
    except ClientError as e:
        raise StoreError(f"DynamoDB {e.response.get('Error', {}).get('Code')}") from e
