"""Label matchers, in Alertmanager's syntax: `cluster="a"`, `severity!="info"`, `team=~"ml|cv"`.

Routes and silences select alerts with a list of matchers, all of which must hold. A label may
have several values (an alert about three users names three `user`s): `=` and `=~` hold when
any value matches, `!=` and `!~` when none does. A missing label has the single value "".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gpulse.errors import InvalidInput

Labels = Mapping[str, Sequence[str]]
LABELS = ("rule", "severity", "cluster", "node_group", "node", "gpu", "team", "user", "state", "job")
_SYNTAX = re.compile(r'^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # "=", "!=", "=~", "!~"
    value: str

    def matches(self, labels: Labels) -> bool:
        values = list(labels.get(self.label, ())) or [""]
        if self.op in ("=", "!="):
            hit = any(v == self.value for v in values)
        else:
            pattern = re.compile(self.value)
            hit = any(pattern.fullmatch(v) is not None for v in values)
        return hit if self.op in ("=", "=~") else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'


def parse(text: str) -> Matcher:
    """One matcher; InvalidInput says what is wrong with it."""
    m = _SYNTAX.match(text)
    if m is None:
        raise InvalidInput(f'matcher {text!r} is not label="value" (operators =, !=, =~, !~)')
    label, op, raw = m.groups()
    if label not in LABELS:
        raise InvalidInput(f"matcher {text!r}: unknown label {label!r}; labels are {', '.join(LABELS)}")
    value = re.sub(r"\\(.)", r"\1", raw)
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as e:
            raise InvalidInput(f"matcher {text!r}: bad regular expression: {e}") from None
    return Matcher(label, op, value)


def parse_all(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse(t) for t in texts)


def match_all(matchers: Iterable[Matcher], labels: Labels) -> bool:
    """True when every matcher holds (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
