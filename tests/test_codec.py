"""Everything a paused run keeps round-trips through JSON + blobs exactly."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from midrun.engine.codec import Codec, Decoder, Encoder, UnencodableValue, register_codec


def round_trip(value):
    encoder = Encoder()
    text = json.dumps(encoder.encode(value))
    return Decoder(dict(encoder.blobs)).decode(json.loads(text))


def test_plain_and_tagged_values_round_trip() -> None:
    value = {
        "ints": [0, -1, 2**64 - 1, 2**100],
        "floats": [0.1, 1e-300, -0.0, 1 / 3, math.inf],
        "text": "ünïcode ✓",
        "none": None,
        "flags": [True, False],
        "tuple": (1, (2, "three")),
        "int_keys": {1: "a", (2, 3): "b"},
        "$dollar": {"$t": "not a tag"},
        "bytes": b"\x00\xffraw",
        "nested": [{"a": [(), {}]}],
    }
    back = round_trip(value)
    assert back == value
    assert type(back["tuple"]) is tuple and type(back["tuple"][1]) is tuple
    assert math.copysign(1, back["floats"][2]) == -1  # -0.0 kept
    assert math.isnan(round_trip(math.nan))


def test_registered_codec_and_unknown_types() -> None:
    register_codec(
        Codec(
            "fraction",
            Fraction,
            lambda f: ({"n": f.numerator}, str(f.denominator).encode()),
            lambda meta, data: Fraction(meta["n"], int(data.decode())),
        )
    )
    assert round_trip({"x": Fraction(3, 7)}) == {"x": Fraction(3, 7)}

    class Opaque:
        pass

    with pytest.raises(UnencodableValue, match="Opaque"):
        Encoder().encode([Opaque()])
    with pytest.raises(UnencodableValue, match="no codec"):
        Decoder({"b0": b""}).decode({"$t": "martian", "meta": {}, "blob": "b0"})
