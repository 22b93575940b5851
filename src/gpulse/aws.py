"""The one place where boto3's ClientError becomes a gpulse error, and DynamoDB's paging a loop.

Every store in the core calls AWS inside `translated(...)`: a failed condition becomes
`ConditionFailed` (a fact about the data: someone else wrote first), anything else a
`StoreError` whose `retryable` says whether a later call can succeed (throttling, a service
error, a transaction conflict) or not (a validation error, a missing table, access denied).
Callers decide by that flag — retry, 503, or a 4xx/configuration error — never by message text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from gpulse.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Codes a later call may get past: throttling, capacity, AWS's own faults, a concurrent transaction;
# and the deployment's own faults (a table missing, a role without the grant, expired credentials):
# the request is fine, so what it carries must wait for the fix (ingest: 503, the node spools) and
# never be refused as if the data were wrong. Only a refusal of the request itself (a
# ValidationException: an item too large, a malformed expression) is not retryable.
RETRYABLE_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "RequestThrottled",
        "OverLimit",
        "KMSThrottlingException",
    }
)
# A cancelled transaction's per-item reasons that a retry may get past.
RETRYABLE_CANCELLATIONS = frozenset(
    {"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
)


class ConditionFailed(StoreError):
    """A conditional write found the item not as expected: another writer got there first."""

    retryable = False


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code") or "Unknown")


def cancellation_reasons(e: ClientError) -> set[str]:
    """The per-item reasons of a cancelled transaction ("None" for the items that were fine)."""
    return {str(r.get("Code")) for r in e.response.get("CancellationReasons", [])}


def store_error(e: ClientError, service: str) -> StoreError:
    """The StoreError for a failed call, retryable where a later call may succeed."""
    code = error_code(e)
    err = StoreError(f"{service} {code}")
    err.retryable = code in RETRYABLE_CODES or bool(cancellation_reasons(e) & RETRYABLE_CANCELLATIONS)
    return err


@contextmanager
def translated(service: str = "DynamoDB") -> Iterator[None]:
    """Run AWS calls; ClientError leaves as ConditionFailed (a failed condition, also inside a
    transaction) or as store_error(...)."""
    try:
        yield
    except ClientError as e:
        if error_code(
            e
        ) == "ConditionalCheckFailedException" or "ConditionalCheckFailed" in cancellation_reasons(e):
            raise ConditionFailed(f"{service}: condition failed") from None
        raise store_error(e, service) from e


def query_all(client: DynamoDBClient, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item a Query returns, page after page (errors translated)."""
    with translated():
        while True:
            page = client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
