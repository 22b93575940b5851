"""`gpulse dlq …`: what sits in the findings dead-letter queue, why, and sending it back.

`list` and `show` look without taking: messages are received for a moment and made visible
again. `redrive` sends messages back to the findings queue (with their attributes: a refused
notification goes back to the channel that refused it) and deletes them from the DLQ only
after SQS took the copy. SQS's StartMessageMoveTask would move everything but cannot pick
messages, and moto does not serve it, so redrive receives, sends and deletes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gpulse.cli import format as fmt
from gpulse.cli.context import Context
from gpulse.errors import InvalidInput

PEEK_VISIBILITY_S = 30  # long enough to page through the queue; released right after
MAX_MESSAGES = 10_000


def _sqs(ctx: Context) -> tuple[Any, str]:
    return ctx.conn.client("sqs"), ctx.conn.output("FindingsDlqUrl")


def _take(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message of the queue, received (hidden for PEEK_VISIBILITY_S); the caller releases
    or deletes them."""
    out: dict[str, dict[str, Any]] = {}
    while len(out) < MAX_MESSAGES:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=PEEK_VISIBILITY_S,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            break
        out.update({m["MessageId"]: m for m in got})
    return sorted(out.values(), key=lambda m: (int(m["Attributes"].get("SentTimestamp", 0)), m["MessageId"]))


def _release(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    for i in range(0, len(messages), 10):
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for n, m in enumerate(messages[i : i + 10])
        ]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)


def _peek(ctx: Context) -> list[dict[str, Any]]:
    sqs, url = _sqs(ctx)
    messages = _take(sqs, url)
    _release(sqs, url, messages)
    return messages


def _attr(m: dict[str, Any], name: str) -> str | None:
    value = m.get("MessageAttributes", {}).get(name)
    return str(value["StringValue"]) if value else None


def what(body: str) -> str:
    """One line on what a parked message holds."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        return "unreadable (not JSON)"
    if isinstance(doc, dict) and "firing" in doc and "resolved" in doc:
        rules = sorted(
            {f.get("rule", "?") for f in [*doc["firing"], *doc["resolved"]] if isinstance(f, dict)}
        )
        return (
            f"notification {doc.get('id')}: {len(doc['firing'])} firing, "
            f"{len(doc['resolved'])} resolved ({', '.join(rules)})"
        )
    if isinstance(doc, dict) and "rule" in doc:
        return f"finding {doc.get('rule')} {doc.get('state')} in cluster {doc.get('cluster')}"
    return "unreadable (not a finding or notification)"


def _row(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": m["MessageId"],
        "sent_at": int(m["Attributes"].get("SentTimestamp", 0)) / 1000,
        "receives": int(m["Attributes"].get("ApproximateReceiveCount", 0)),
        "channel": _attr(m, "channel"),
        "reason": _attr(m, "reason"),
        "what": what(m["Body"]),
    }


def cmd_list(ctx: Context) -> int:
    rows = [_row(m) for m in _peek(ctx)]
    if ctx.wants_json:
        ctx.json(rows)
        return 0
    if not rows:
        ctx.print("the dead-letter queue is empty")
        return 0
    table = [
        [r["id"], fmt.iso(r["sent_at"]), r["channel"] or "-", r["reason"] or "-", r["what"]] for r in rows
    ]
    ctx.print(*fmt.table(["ID", "SENT", "CHANNEL", "REASON", "WHAT"], table))
    return 0


def cmd_show(ctx: Context) -> int:
    found = [m for m in _peek(ctx) if m["MessageId"] == ctx.args.id]
    if not found:
        raise InvalidInput(f"no message {ctx.args.id!r} in the dead-letter queue (`gpulse dlq list`)")
    m = found[0]
    row = _row(m)
    try:
        body: Any = json.loads(m["Body"])
    except json.JSONDecodeError:
        body = m["Body"]
    if ctx.wants_json:
        ctx.json({**row, "body": fmt.withhold_urls(body)})
        return 0
    ctx.print(
        f"id:       {row['id']}",
        f"sent:     {fmt.iso(row['sent_at'])}",
        f"receives: {row['receives']}",
        f"channel:  {row['channel'] or '-'}",
        f"reason:   {row['reason'] or '-'}",
        f"what:     {row['what']}",
        "body:",
        fmt.dumps(fmt.withhold_urls(body)) if not isinstance(body, str) else body,
    )
    return 0


def cmd_redrive(ctx: Context) -> int:
    if not ctx.args.all and not ctx.args.ids:
        raise InvalidInput("name the messages to redrive (IDs from `gpulse dlq list`), or pass --all")
    sqs, url = _sqs(ctx)
    queue = ctx.conn.output("FindingsQueueUrl")
    messages = _take(sqs, url)
    wanted = [m for m in messages if ctx.args.all or m["MessageId"] in ctx.args.ids]
    missing = sorted(set(ctx.args.ids or ()) - {m["MessageId"] for m in wanted})
    if missing:  # a mistyped ID moves nothing: the operator reads the list again
        _release(sqs, url, messages)
        raise InvalidInput(f"not in the dead-letter queue: {', '.join(missing)} (`gpulse dlq list`)")
    _release(sqs, url, [m for m in messages if m not in wanted])
    for m in wanted:
        attrs = {
            k: {"DataType": v["DataType"], "StringValue": v["StringValue"]}
            for k, v in m.get("MessageAttributes", {}).items()
            if "StringValue" in v
        }
        kwargs: dict[str, Any] = {"MessageAttributes": attrs} if attrs else {}
        sqs.send_message(QueueUrl=queue, MessageBody=m["Body"], **kwargs)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])  # only once the copy is in
        ctx.print(f"redriven {m['MessageId']}")
    ctx.print(f"{len(wanted)} message(s) sent back to the findings queue")
    return 0


def cmd_purge(ctx: Context) -> int:
    sqs, url = _sqs(ctx)
    messages = _take(sqs, url)
    if not ctx.args.yes:
        _release(sqs, url, messages)
        ctx.print(f"would delete {len(messages)} message(s); pass --yes to delete them")
        return 0
    for m in messages:  # what was seen, not PurgeQueue: a message parked meanwhile stays
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    ctx.print(f"deleted {len(messages)} message(s)")
    return 0


def register(sub: Any, common: list[argparse.ArgumentParser], write: list[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="the findings dead-letter queue: list, show, redrive, purge")
    ds = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = ds.add_parser("list", parents=common, help="what is parked, and why")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_list)

    p = ds.add_parser("show", parents=common, help="one message: its reason, channel and body")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=cmd_show)

    p = ds.add_parser("redrive", parents=common, help="send messages back to the findings queue")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every message in the queue")
    p.set_defaults(func=cmd_redrive)

    p = ds.add_parser("purge", parents=common, help="delete every message (asks for --yes)")
    p.add_argument("--yes", action="store_true", help="really delete")
    p.set_defaults(func=cmd_purge)
