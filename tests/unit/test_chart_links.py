"""Signed chart links (gpulse.notify.links): the exact signature, the expiry boundary, every
tampered part refused, the constant-time compare, and names outside `charts/` never served."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.runtime import match_route
from devstack.template import TEMPLATE_PATH, HttpApiEvent, load_template
from gpulse.errors import InvalidInput
from gpulse.notify import links
from gpulse.notify.links import ChartLinks, LinkKeys, LinkRefused, name_of, object_key, signature, verify
from tests.events import load_event

KEY = b"k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!"
NAME = "0123456789abcdef0123456789abcdef/fp-memory.png"
EXP = 1_700_000_000
# printf '<NAME>\n<EXP>' | openssl dgst -sha256 -hmac '<KEY>'
SIG = "025fb603f376d041f6b953a773365c4e3cb108ef814ed688eddf6dedb53e4b86"


def test_the_signature_is_hmac_sha256_of_name_and_expiry() -> None:
    assert signature(KEY, NAME, EXP) == SIG


def test_a_valid_link_reads_its_object_until_the_second_it_expires() -> None:
    assert verify([KEY], NAME, str(EXP), SIG, now=EXP - 1) == "charts/" + NAME
    assert verify([KEY], NAME, str(EXP), SIG, now=EXP - 0.001) == "charts/" + NAME
    for now in (EXP, EXP + 0.5, EXP + 86_400):
        with pytest.raises(LinkRefused, match="expired") as e:
            verify([KEY], NAME, str(EXP), SIG, now=now)
        assert e.value.status == 403


@pytest.mark.parametrize(
    ("name", "exp", "sig", "status", "message"),
    [
        (NAME.replace("fp-memory", "fp-memorx"), str(EXP), SIG, 403, "signature"),  # another chart
        (NAME, str(EXP + 86_400), SIG, 403, "signature"),  # a later expiry
        (NAME, str(EXP), SIG[:-1] + "5", 403, "signature"),
        (NAME, str(EXP), SIG.upper(), 403, "signature"),
        (NAME, str(EXP), SIG[:32], 403, "signature"),
        (NAME, str(EXP), "é" * 64, 403, "signature"),
        (NAME, str(EXP), None, 400, "needs its exp and sig"),
        (NAME, None, SIG, 400, "needs its exp and sig"),
        (NAME, "", SIG, 400, "needs its exp and sig"),
        (NAME, "-1", SIG, 400, "unix seconds"),
        (NAME, "1e9", SIG, 400, "unix seconds"),
        (NAME, "9" * 13, SIG, 400, "unix seconds"),
    ],
)
def test_a_tampered_or_incomplete_link_is_refused(
    name: str, exp: str | None, sig: str | None, status: int, message: str
) -> None:
    with pytest.raises(LinkRefused, match=message) as e:
        verify([KEY], name, exp, sig, now=EXP - 60)
    assert e.value.status == status and isinstance(e.value, InvalidInput)


def test_another_key_refuses_the_link() -> None:
    with pytest.raises(LinkRefused, match="signature"):
        verify([KEY + b"x"], NAME, str(EXP), SIG, now=EXP - 60)


@pytest.mark.parametrize(
    "name",
    [
        "../secrets.png",
        "0123456789abcdef0123456789abcdef/../x.png",
        "0123456789abcdef0123456789abcdef/..png",
        "0123456789abcdef0123456789abcdef/fp.png/../../other",
        "charts/0123456789abcdef0123456789abcdef/fp.png",
        "0123456789abcdef0123456789abcdef/fp.txt",
        "0123456789abcdef0123456789abcdef/sub/fp.png",
        "0123456789ABCDEF0123456789abcdef/fp.png",
        "/0123456789abcdef0123456789abcdef/fp.png",
        "0123456789abcdef0123456789abcdef/fp.png\n1",
        "",
    ],
)
def test_a_name_no_chart_can_have_is_404_even_when_signed(name: str) -> None:
    sig = signature(KEY, name, EXP)  # signed with the real key: the shape alone refuses it
    with pytest.raises(LinkRefused, match="no such chart") as e:
        verify([KEY], name, str(EXP), sig, now=EXP - 60)
    assert e.value.status == 404


@given(st.text(max_size=80))
def test_whatever_is_served_lies_under_charts_and_has_no_dot_dot(name: str) -> None:
    try:
        key = object_key(name)
    except LinkRefused:
        return
    assert key == "charts/" + name and ".." not in key and key.count("/") == 2 and key.endswith(".png")


def test_the_signature_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(links.hmac, "compare_digest", spy)
    verify([KEY], NAME, str(EXP), SIG, now=EXP - 1)
    with pytest.raises(LinkRefused):
        verify([KEY], NAME, str(EXP), "0" * 64, now=EXP - 1)
    assert calls == [(SIG.encode(), SIG.encode()), (SIG.encode(), b"0" * 64)]


def test_only_chart_keys_are_linked() -> None:
    assert name_of("charts/" + NAME) == NAME
    for key in ("other/" + NAME, NAME, "charts/../" + NAME, "charts/x.png"):
        with pytest.raises(ValueError, match="not a chart key"):
            name_of(key)


def test_a_link_is_on_the_api_route_and_expires_link_s_after_now() -> None:
    got = ChartLinks(
        "https://abc.execute-api.eu-west-1.amazonaws.com/",
        lambda: KEY.decode() + "\n",  # as put by hand: the newline is not part of the key
        link_s=604_800,
        clock=lambda: EXP - 604_800 + 0.9,
    ).url("charts/" + NAME)
    assert got == f"https://abc.execute-api.eu-west-1.amazonaws.com/v1/charts/{NAME}?exp={EXP}&sig={SIG}"
    parts = urlsplit(got)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    name = parts.path.removeprefix("/v1/charts/")
    assert verify([KEY], name, query["exp"], query["sig"], now=EXP - 1) == "charts/" + NAME


def test_without_a_key_there_is_no_link_and_that_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    reads: list[int] = []

    def missing() -> str | None:
        reads.append(1)
        return None

    links_ = ChartLinks("https://api", missing, link_s=60)
    with caplog.at_level(logging.WARNING, logger="gpulse.notify.links"):
        assert links_.url("charts/" + NAME) is None
        assert links_.url("charts/" + NAME) is None
    assert len(reads) == 2  # read each time: a key put later is used (SSM's cache bounds the reads)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["no chart link key in SSM"]


def test_a_key_too_short_to_be_one_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gpulse.notify.links"):
        assert ChartLinks("https://api", lambda: "x" * 31, link_s=60).url("charts/" + NAME) is None
    assert len(caplog.records) == 1
    assert ChartLinks("https://api", lambda: "x" * 32, link_s=60, clock=lambda: 0).url("charts/" + NAME) == (
        f"https://api/v1/charts/{NAME}?exp=60&sig={signature(b'x' * 32, NAME, 60)}"
    )
    with pytest.raises(ValueError, match="at least 32"):
        links.check_key(" " + "x" * 31 + "\n")


def test_the_sample_event_is_the_templates_route_as_the_local_api_matches_it() -> None:
    template = load_template(TEMPLATE_PATH)
    (route,) = [
        e["Properties"] for e in template["Resources"]["ChartsFunction"]["Properties"]["Events"].values()
    ]
    event = load_event("charts_get")
    routes = [
        HttpApiEvent("POST", "/v1/batches", "PostBatch"),
        HttpApiEvent("GET", route["Path"], "GetChart"),
    ]
    assert event["routeKey"] == f"GET {route['Path']}" == "GET /v1/charts/{key+}"
    assert match_route(routes, "GET", event["rawPath"]) == (routes[1], event["pathParameters"])
    assert event["pathParameters"]["key"] == NAME.replace("fp-memory", "e481145432c068bc068a")
    assert match_route(routes, "POST", event["rawPath"]) is None
    assert match_route(routes, "GET", "/v1/charts/") is None  # a greedy parameter is never empty
    assert match_route(routes, "POST", "/v1/batches") == (routes[0], {})


def test_a_link_signed_by_the_key_before_a_rotation_is_still_served() -> None:
    new = b"n3w-n3w-n3w-n3w-n3w-n3w-n3w-n3w-n3w!"
    assert verify([new, KEY], NAME, str(EXP), SIG, now=EXP - 1) == "charts/" + NAME
    assert verify([KEY, new], NAME, str(EXP), signature(new, NAME, EXP), now=EXP - 1) == "charts/" + NAME
    with pytest.raises(LinkRefused, match="signature"):
        verify([new], NAME, str(EXP), SIG, now=EXP - 1)  # once the old key is no longer accepted


def test_every_key_is_tried_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append(a)
        return real(a, b)

    monkeypatch.setattr(links.hmac, "compare_digest", spy)
    other = b"0th3r-0th3r-0th3r-0th3r-0th3r-0th3r"
    verify([KEY, other], NAME, str(EXP), SIG, now=EXP - 1)
    assert calls == [SIG.encode(), signature(other, NAME, EXP).encode()]


class Ssm:
    """Parameters by name, counting reads; `fresh` reads are recorded apart."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.reads: list[tuple[str, bool]] = []

    def read(self, name: str, fresh: bool) -> str | None:
        self.reads.append((name, fresh))
        return self.values.get(name)


def test_the_key_before_a_rotation_is_accepted_until_its_until_and_never_a_short_one() -> None:
    old = KEY.decode()
    ssm = Ssm({"k": "n" * 40, "k.previous": json.dumps({"secret": old, "until": EXP + 10})})
    keys = LinkKeys("k", ssm.read)
    assert keys.keys(EXP) == [b"n" * 40, KEY]
    assert keys.keys(EXP + 10) == [b"n" * 40]
    ssm.values["k.previous"] = json.dumps({"secret": "short", "until": EXP + 10})
    assert keys.keys(EXP) == [b"n" * 40]
    ssm.values["k.previous"] = "not json"
    assert keys.keys(EXP) == [b"n" * 40]
    del ssm.values["k"]
    with pytest.raises(LinkRefused, match="not enabled") as e:
        keys.keys(EXP)
    assert e.value.status == 403


def test_a_link_no_cached_key_signed_re_reads_the_keys_at_most_once_a_minute() -> None:
    ssm = Ssm({"k": KEY.decode()})
    clock = [1000.0]
    keys = LinkKeys("k", ssm.read, clock=lambda: clock[0])
    assert keys.verify(NAME, str(EXP), SIG, now=EXP - 1) == "charts/" + NAME
    assert ssm.reads == [("k", False), ("k.previous", False)]  # signed by a cached key: no re-read
    ssm.reads.clear()
    for _ in range(3):  # forged links: the first re-reads, the others wait for the minute
        with pytest.raises(LinkRefused, match="signature"):
            keys.verify(NAME, str(EXP), "0" * 64, now=EXP - 1)
    assert [r for r in ssm.reads if r[1]] == [("k", True), ("k.previous", True)]
    clock[0] += 60
    ssm.reads.clear()
    with pytest.raises(LinkRefused, match="signature"):
        keys.verify(NAME, str(EXP), "0" * 64, now=EXP - 1)
    assert [r for r in ssm.reads if r[1]] == [("k", True), ("k.previous", True)]
