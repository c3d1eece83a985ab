"""Request bodies for fuzzing over HTTP: hostile values, valid bodies mutated at any depth, arbitrary
JSON (NaN and infinities included, which Python reads but JSON has not) and bytes that are not JSON.
Shared by the API's fuzz test (`test_http_bodies`) and the proxy's (`test_proxy_bodies`)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

HOSTILE = [
    -1, 0, 1, 10**12, 10**12 + 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**100, -(10**30),
    0.5, 1e308, -0.0, 1.0, "1", "-1", "1e3", "1e400", "0.0000001", "1.0000001", "NaN", "Infinity", "",
    " ", "\x00", "a\x00b", "\ud800", "\udfff\ud800", "\u202e", "\t\n\r", "\x1b[31m", "🙂" * 60,
    "' OR 1=1 --", "../../etc/passwd", "%s%n", True, False, None, [], {}, [1, "a"], {"a": {}},
]  # fmt: skip
# copied: a list or object from HOSTILE must not be shared by the bodies that later grow it
hostile_samples = st.sampled_from(HOSTILE).map(copy.deepcopy)
long_strings = st.sampled_from([257, 1000, 70_000]).map(lambda size: "x" * size)  # 70 000: over 64 KiB

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(),  # NaN and infinities become `NaN`/`Infinity` tokens: not JSON
    st.text(max_size=40),
    hostile_samples,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)
hostile = st.one_of(hostile_samples, long_strings, json_values)
extra_keys = st.sampled_from(["extra", "practice_id", "usage", "__proto__", "id", "", "ü"]) | st.text(
    max_size=8
)


def dict_paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every path to a field in nested objects: ("usage",), ("usage", "input_tokens"), …"""
    found = []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.append((*prefix, key))
            found.extend(dict_paths(inner, (*prefix, key)))
    return found


def at(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        body = body[key]
    return body


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """A valid body with one to three fields replaced, dropped or added, at any depth."""
    body = copy.deepcopy(valid)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        paths = dict_paths(body)
        kind = draw(st.sampled_from(["replace", "replace", "drop", "add"])) if paths else "add"
        if kind == "add":
            parents = [(), *(path for path in paths if isinstance(at(body, path), dict))]
            at(body, draw(st.sampled_from(parents)))[draw(extra_keys)] = draw(hostile)
            continue
        path = draw(st.sampled_from(paths))
        parent = at(body, path[:-1])
        if kind == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(hostile)
    return body


@dataclass(frozen=True)
class Body:
    """What is sent: `content` as is, with its content type (None: no header)."""

    content: bytes
    content_type: str | None = "application/json"

    def __repr__(self) -> str:  # shown by Hypothesis when it reports a failure
        return f"Body({self.content[:500]!r}{'…' if len(self.content) > 500 else ''}, {self.content_type!r})"


def as_json(value: Any) -> Body:
    return Body(json.dumps(value, allow_nan=True).encode())


not_json = st.one_of(
    st.binary(max_size=200).map(Body),
    st.sampled_from(
        [b"", b"{", b'{"a": 1', b"[]", b"null", b'{"a": 1}{"b": 2}', b"\xff\xfe{}", b"{'a': 1}"]
    ).map(Body),
    json_values.map(lambda value: Body(json.dumps(value, allow_nan=True).encode(), None)),
    json_values.map(lambda value: Body(json.dumps(value, allow_nan=True).encode(), "text/plain")),
)


def bodies(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Body]:
    """A third mutated valid bodies, a third valid ones (so calls also get through), a third anything."""
    return st.one_of(
        valid.flatmap(mutated).map(as_json),
        valid.flatmap(mutated).map(as_json),
        valid.map(as_json),
        valid.map(as_json),
        json_values.map(as_json),
        not_json,
    )
