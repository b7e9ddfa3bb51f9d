"""Encoding run values as JSON plus binary blobs, so a paused run is just files.

JSON carries None, bool, int, float, str, lists and string-keyed dicts as they are.
Anything else is tagged with ``"$t"``: tuples, dicts with other keys, bytes (a blob), and
types with a registered :class:`Codec` (the diffusion layer registers tensors; the engine
itself knows none). A value no codec knows raises :class:`UnencodableValue`, which the
executor turns into "re-run this deterministic node on resume" where it can.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

TAG = "$t"


class UnencodableValue(TypeError):
    """A value has no codec (e.g. a loaded model object)."""


@dataclass(frozen=True, slots=True)
class Live:
    """A part of a step state that is not saved: a live object (a loaded model) that the
    node binds again from its inputs when the run resumes. Saved as a marker; it comes
    back as ``Live(None)``."""

    value: Any = None


@dataclass(frozen=True, slots=True)
class Codec:
    """How to turn one Python type into ``(meta, bytes)`` and back."""

    name: str
    type: type
    encode: Callable[[Any], tuple[dict[str, Any], bytes]]
    decode: Callable[[dict[str, Any], bytes], Any]


_CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Teach the run-state writer a new type (idempotent per name)."""
    _CODECS[codec.name] = codec


def _codec_for(value: Any) -> Codec | None:
    for codec in _CODECS.values():
        if isinstance(value, codec.type):
            return codec
    return None


class Encoder:
    """Encodes values; binary parts are collected in ``blobs`` (name -> bytes)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def _blob(self, data: bytes) -> str:
        name = f"b{len(self.blobs)}"
        self.blobs[name] = data
        return name

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": [self.encode(v) for v in value]}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v) for k, v in value.items()}
            return {
                TAG: "dict",
                "items": [[self.encode(k), self.encode(v)] for k, v in value.items()],
            }
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {TAG: "bytes", "blob": self._blob(bytes(value))}
        if isinstance(value, Live):
            return {TAG: "live"}
        codec = _codec_for(value)
        if codec is None:
            raise UnencodableValue(
                f"no codec for {type(value).__module__}.{type(value).__qualname__}"
            )
        meta, data = codec.encode(value)
        return {TAG: codec.name, "meta": meta, "blob": self._blob(data)}


class Decoder:
    """Decodes what :class:`Encoder` produced, reading blobs from a mapping."""

    def __init__(self, blobs: MutableMapping[str, bytes] | dict[str, bytes]) -> None:
        self.blobs = blobs

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = value.get(TAG)
        if tag is None:
            return {k: self.decode(v) for k, v in value.items()}
        if tag == "tuple":
            return tuple(self.decode(v) for v in value["items"])
        if tag == "dict":
            return {self.decode(k): self.decode(v) for k, v in value["items"]}
        if tag == "bytes":
            return self.blobs[value["blob"]]
        if tag == "live":
            return Live()
        codec = _CODECS.get(tag)
        if codec is None:
            raise UnencodableValue(
                f"saved value has type {tag!r} but no codec for it is registered in this process"
            )
        return codec.decode(value["meta"], self.blobs[value["blob"]])
