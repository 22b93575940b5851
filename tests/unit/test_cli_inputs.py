"""The CLI's argument values: durations, key=value, matchers, channels (URLs refused), mentions, times."""

from __future__ import annotations

import pytest

from gpulse.cli import inputs
from gpulse.errors import InvalidInput

URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (" 4H ", 14400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert inputs.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5x", "5m3", "-5m", "m5", "5 m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not like 90, 90s, 5m"):
        inputs.parse_duration(text)


def test_seconds_are_whole_when_they_can_be() -> None:
    assert inputs.seconds("5m") == 300 and isinstance(inputs.seconds("5m"), int)
    assert inputs.seconds("1.5s") == 1.5


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("min_gap=30", ("min_gap", 30)),
        ("level_ratio=0.4", ("level_ratio", 0.4)),
        ("for_s=5m", ("for_s", 300)),
        ("for_s=120", ("for_s", 120)),
        ("corr_window_s=2m", ("corr_window_s", 120)),
        ("severity=critical", ("severity", "critical")),
        ("enabled=true", ("enabled", True)),
        ("x=[1, 2]", ("x", [1, 2])),
        ("x_s=soon", ("x_s", "soon")),  # not a duration, not JSON: the detector's check names it
        ("held_mem_bytes=2147483648", ("held_mem_bytes", 2147483648)),
    ],
)
def test_assignments(text: str, pair: tuple[str, object]) -> None:
    assert inputs.parse_assignment(text) == pair


@pytest.mark.parametrize("text", ["min_gap", "=3", "Min=3", "a b=3"])
def test_bad_assignments_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not key=value"):
        inputs.parse_assignment(text)


def test_matchers_are_validated_and_written_one_way() -> None:
    assert inputs.canonical_matchers(
        ['cluster="a"', "severity=~crit.*", " team != ml ", 'node!~"n-0[12]"']
    ) == [
        'cluster="a"',
        'severity=~"crit.*"',
        'team!="ml"',
        'node!~"n-0[12]"',
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('colour="red"', "unknown label 'colour'"),
        ('severity=~"(crit"', "bad regular expression"),
        ("cluster", 'is not label="value"'),
    ],
)
def test_bad_matchers_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        inputs.canonical_matchers([text])


def test_channels_are_secret_references() -> None:
    assert inputs.parse_channel("slack:/gpulse/prod/webhooks/ml") == {
        "kind": "slack",
        "secret": "/gpulse/prod/webhooks/ml",
    }
    assert inputs.parse_channel("Jandi:/gpulse/prod/webhooks/ops") == {
        "kind": "jandi",
        "secret": "/gpulse/prod/webhooks/ops",
    }


@pytest.mark.parametrize(
    "text",
    [URL, f"slack:{URL}", "slack:hooks.slack.com/services/T000/B000/XXXXSECRET", "http://127.0.0.1:9/x"],
)
def test_a_url_is_refused_and_not_echoed(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        inputs.parse_channel(text)
    message = str(e.value)
    assert "aws ssm put-parameter --type SecureString" in message
    assert "--channel slack:/gpulse/<stage>/webhooks/<name>" in message
    assert "SECRET" not in message and "127.0.0.1" not in message


def test_a_jandi_url_is_refused_with_a_jandi_example() -> None:
    with pytest.raises(InvalidInput, match="--channel jandi:/gpulse/<stage>/webhooks/<name>"):
        inputs.parse_channel("jandi:https://wh.jandi.com/connect-api/webhook/1/abc")


@pytest.mark.parametrize("text", ["/gpulse/prod/webhooks/ml", "teams:/gpulse/prod/webhooks/ml"])
def test_a_channel_needs_a_known_kind(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not KIND:SSM-PARAMETER with KIND one of slack, jandi"):
        inputs.parse_channel(text)


def test_a_route_file_with_a_url_is_refused() -> None:
    inputs.check_channels({"channels": [{"kind": "slack", "secret": "/gpulse/p/webhooks/a"}]})
    with pytest.raises(InvalidInput) as e:
        inputs.check_channels({"channels": [{"kind": "jandi", "secret": URL}]})
    assert "SECRET" not in str(e.value) and "jandi:/gpulse/<stage>" in str(e.value)


def test_mentions() -> None:
    assert inputs.parse_mention("alice=<@U123>") == ("alice", "<@U123>")
    assert inputs.parse_mention("ml=<!subteam^S1>") == ("ml", "<!subteam^S1>")
    with pytest.raises(InvalidInput, match="is not NAME=HANDLE"):
        inputs.parse_mention("alice")
    with pytest.raises(InvalidInput, match="is not NAME=HANDLE"):
        inputs.parse_mention("alice=")


def test_times() -> None:
    assert inputs.parse_time("2025-11-22T10:00:00Z") == 1763805600.0
    assert inputs.parse_time("2025-11-22T10:00:00") == 1763805600.0  # no offset: UTC
    assert inputs.parse_time("2025-11-22T19:00:00+09:00") == 1763805600.0
    with pytest.raises(InvalidInput, match="is not ISO 8601"):
        inputs.parse_time("tomorrow")


def test_between_and_days() -> None:
    assert inputs.parse_between("22:00-06:00") == ("22:00", "06:00")
    for bad in ("22-06", "24:00-06:00", "9:00-17:00", "09:00"):
        with pytest.raises(InvalidInput, match="is not HH:MM-HH:MM"):
            inputs.parse_between(bad)
    assert inputs.parse_days("mon,TUE,Wednesday,mon") == ["MONDAY", "TUESDAY", "WEDNESDAY"]
    assert inputs.parse_days("sat, sun") == ["SATURDAY", "SUNDAY"]
    for bad in ("MO", "FUNDAY", ""):
        with pytest.raises(InvalidInput, match="is not a day"):
            inputs.parse_days(bad)
