"""The one resume guard: a long job (shard preparation, the target cache, training) continues only with
the settings it started with. Each compares what it saved with what it is asked to do now, here."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Collection[str] = (),
                     ignore_leaf: Collection[str] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, new value) of every setting that differs, sorted by key. `ignore`: keys
    that may change (dotted); `ignore_leaf`: last key parts that may change anywhere (a path)."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in ignore and k.rsplit(".", 1)[-1] not in ignore_leaf]


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k}: {was!r} -> {now!r}" for k, was, now in changes)
