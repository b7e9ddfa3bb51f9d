"""The output cache: node outputs keyed by what determines them.

A node's key hashes its class, its literal inputs and, for each linked input, the key of
the source node and the output index. Equal keys mean equal results, so a re-run after an
edit recomputes exactly the nodes whose key changed and everything downstream of them.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None = None


class OutputCache:
    """Least-recently-used map from cache key to a node's outputs."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def get(self, key: str) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def node_key(
    class_type: str, literals: Mapping[str, Any], links: Mapping[str, tuple[str, int]]
) -> str:
    """The cache key of a node given its literal inputs and its links' (source key, index)."""
    document = {
        "class": class_type,
        "literals": sorted((name, _canonical(v)) for name, v in literals.items()),
        "links": sorted((name, key, index) for name, (key, index) in links.items()),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    # Distinguish 1 from 1.0 from True so that a type change is a change.
    return [type(value).__name__, value]
