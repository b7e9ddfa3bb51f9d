"""The demo model's data: coloured shapes on plain backgrounds, drawn in code.

Every image is a pure function of its :class:`ShapeSpec` (shape, colour, background,
size, position, rotation), so the dataset is reproducible from a seed. Shapes stand upright
give or take a few degrees: a model this small learns sharp corners far better when a
triangle's point goes up than when it may point anywhere (the first demo model drew any
angle, and blurred triangles and squares towards circles). Shapes are drawn at
four times the size and downsampled, for clean anti-aliased edges. Some (colour, shape,
background) triples are held out of training, so generalisation to unseen combinations
can be measured.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "ring")

#: Saturated colours, far apart from each other and from the backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (35, 165, 60),
    "cyan": (30, 200, 215),
    "blue": (40, 70, 225),
    "purple": (135, 45, 190),
    "pink": (245, 120, 190),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}

#: Share of (colour, shape, background) triples kept out of training.
HELD_OUT_SHARE = 0.15


@dataclass(frozen=True, slots=True)
class ShapeSpec:
    shape: str
    colour: str
    background: str
    radius: float  # of the circumscribed circle, in pixels of the 64 x 64 image
    cx: float
    cy: float
    rotation: float  # radians

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def triples() -> list[tuple[str, str, str]]:
    return [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]


def is_held_out(colour: str, shape: str, background: str) -> bool:
    """A fixed, hash-chosen subset of triples, never seen in training."""
    digest = hashlib.sha256(f"{colour}/{shape}/{background}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT_SHARE


def split() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """``(train, held_out)`` triples."""
    train = [t for t in triples() if not is_held_out(*t)]
    held = [t for t in triples() if is_held_out(*t)]
    return train, held


#: The angle that stands each shape upright: a triangle's and a star's point up, a
#: square's sides level (``_polygon`` puts the first corner at the rotation angle).
UPRIGHT = {"circle": 0.0, "ring": 0.0, "square": math.pi / 4, "triangle": -math.pi / 2,
           "star": -math.pi / 2}  # fmt: skip

#: Default tilt range in degrees either side of upright.
TILT = 10.0
#: The tilt that means any angle (the first demo model's data, and what its card implies).
ANY_ANGLE = 180.0


def random_spec(rng: random.Random, triple: tuple[str, str, str], tilt: float = TILT) -> ShapeSpec:
    """A random size and position; the rotation is upright give or take ``tilt`` degrees
    (at ``ANY_ANGLE``, any angle: the first demo model's data)."""
    colour, shape, background = triple
    radius = rng.uniform(14.0, 24.0)
    margin = radius + 2.0
    cx, cy = rng.uniform(margin, SIZE - margin), rng.uniform(margin, SIZE - margin)
    if tilt >= ANY_ANGLE:
        rotation = rng.uniform(0.0, 2 * math.pi)
    else:
        rotation = UPRIGHT[shape] + math.radians(rng.uniform(-tilt, tilt))
    return ShapeSpec(shape, colour, background, radius, cx, cy, rotation)


def specs(seed: int, count: int, held_out: bool = False, tilt: float = TILT) -> Iterator[ShapeSpec]:
    """``count`` random specs over the training (or the held-out) triples."""
    rng = random.Random(seed)
    train, held = split()
    pool = held if held_out else train
    for _ in range(count):
        yield random_spec(rng, rng.choice(pool), tilt)


def _polygon(spec: ShapeSpec, scale: float) -> list[tuple[float, float]]:
    r, cx, cy, a = spec.radius * scale, spec.cx * scale, spec.cy * scale, spec.rotation
    if spec.shape == "square":
        corners, radii = 4, [r]
    elif spec.shape == "triangle":
        corners, radii = 3, [r]
    elif spec.shape == "star":
        corners, radii = 10, [r, r * 0.42]
    else:
        raise ValueError(spec.shape)
    points = []
    for i in range(corners):
        angle = a + 2 * math.pi * i / corners
        radius = radii[i % len(radii)]
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render(spec: ShapeSpec) -> Image.Image:
    """The 64 x 64 RGB image of ``spec``."""
    big = SIZE * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[spec.background])
    draw = ImageDraw.Draw(image)
    colour = COLOURS[spec.colour]
    s = SUPERSAMPLE
    r, cx, cy = spec.radius * s, spec.cx * s, spec.cy * s
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif spec.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        inner = r * 0.55
        draw.ellipse(
            (cx - inner, cy - inner, cx + inner, cy + inner), fill=BACKGROUNDS[spec.background]
        )
    else:
        draw.polygon(_polygon(spec, s), fill=colour)
    return image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
