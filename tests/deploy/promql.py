"""What a PromQL expression names: its metric names and its label names (a lexer, not a parser; promtool
checks the syntax). Used to hold every dashboard and rule query to the names the exporter produces."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*|\S")
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                      "offset", "bool", "inf", "nan", "Inf", "NaN"})


@dataclass(frozen=True)
class Names:
    metrics: frozenset[str]
    labels: frozenset[str]


def names(expr: str) -> Names:
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for block in _MATCHERS.findall(text):
        for matcher in filter(None, (m.strip() for m in block.split(","))):
            label = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)", matcher)
            assert label, f"cannot read matcher {matcher!r} in {expr}"
            labels.add(label.group(1))
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for _, group in _GROUPING.findall(text):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    text = _GROUPING.sub(r" \1 ", text)
    tokens = _TOKEN.findall(text)
    metrics = set()
    for i, tok in enumerate(tokens):
        if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", tok) or tok in KEYWORDS:
            continue
        if i + 1 < len(tokens) and tokens[i + 1] in ("(", "by", "without"):
            continue  # a function, or an aggregation (`sum by (...) (...)`)
        metrics.add(tok)
    return Names(frozenset(metrics), frozenset(labels))
