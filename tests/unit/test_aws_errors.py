"""gpulse.aws: how a ClientError becomes a gpulse error, and what its `retryable` says."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from gpulse.aws import ConditionFailed, query_all, translated
from gpulse.errors import StoreError


def client_error(code: str, reasons: list[str] | None = None) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "..."}}
    if reasons is not None:
        response["CancellationReasons"] = [{"Code": r} for r in reasons]
    return ClientError(response, "PutItem")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reasons", "retryable"),
    [
        ("ProvisionedThroughputExceededException", None, True),
        ("ThrottlingException", None, True),
        ("InternalServerError", None, True),
        ("TransactionCanceledException", ["None", "TransactionConflict"], True),
        ("TransactionCanceledException", ["ThrottlingError"], True),
        ("ResourceNotFoundException", None, True),
        ("AccessDeniedException", None, True),
        ("ValidationException", None, False),
        ("ItemCollectionSizeLimitExceededException", None, False),
        ("TransactionCanceledException", ["ValidationError"], False),
    ],
)
def test_a_client_error_becomes_a_store_error_that_says_whether_to_retry(
    code: str, reasons: list[str] | None, retryable: bool
) -> None:
    with pytest.raises(StoreError) as got, translated("DynamoDB"):
        raise client_error(code, reasons)
    assert type(got.value) is StoreError
    assert (str(got.value), got.value.retryable) == (f"DynamoDB {code}", retryable)


@pytest.mark.parametrize(
    "error",
    [
        client_error("ConditionalCheckFailedException"),
        client_error("TransactionCanceledException", ["None", "ConditionalCheckFailed"]),
    ],
)
def test_a_failed_condition_is_its_own_error_alone_or_in_a_transaction(error: ClientError) -> None:
    with pytest.raises(ConditionFailed) as got, translated("DynamoDB"):
        raise error
    assert got.value.retryable is False


class Pages:
    """A client whose Query answers three pages (a stand-in: this is about the loop)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(dict(kwargs))
        page = len(self.calls)
        out: dict[str, Any] = {"Items": [{"n": page}]}
        if page < 3:
            out["LastEvaluatedKey"] = {"k": page}
        return out


def test_query_all_follows_every_page() -> None:
    client = Pages()
    assert list(query_all(client, TableName="t")) == [{"n": 1}, {"n": 2}, {"n": 3}]  # type: ignore[arg-type]
    assert [c.get("ExclusiveStartKey") for c in client.calls] == [None, {"k": 1}, {"k": 2}]
