"""Classifies the dominant shape and colour of an image by plain image analysis.

No neural network: the background is the most common colour of the border, the
foreground is the largest connected region that differs from it, its colour is the
nearest palette colour to its median, and its shape follows from geometry: a hole makes
a ring, a low solidity (area over convex-hull area) a star, and otherwise the spread of
the boundary's distance from the centroid separates circle (flat), square (max/min about
1.41) and triangle (about 2).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from midrun.demo_model.shapes import BACKGROUNDS, COLOURS

FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as shape
MIN_AREA = 30  # pixels: less than this is "nothing there"


@dataclass(frozen=True, slots=True)
class Verdict:
    shape: str  # one of SHAPES, or "unknown"
    colour: str  # one of COLOURS, or "unknown"
    background: str
    area: int
    solidity: float
    radial_ratio: float
    hole_share: float


def classify(image: Image.Image | np.ndarray) -> Verdict:
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    pixels = pixels.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, BACKGROUNDS)
    distance = np.linalg.norm(pixels - background_rgb, axis=-1)
    mask = _largest_component(distance > FOREGROUND_DISTANCE)
    area = int(mask.sum())
    if area < MIN_AREA:
        return Verdict("unknown", "unknown", background, area, 0.0, 0.0, 0.0)
    core = _erode(mask) if _erode(mask).sum() >= MIN_AREA else mask  # skip blended edges
    colour = _nearest(np.median(pixels[core], axis=0), COLOURS)
    filled = _fill_holes(mask)
    hole_share = float((filled.sum() - area) / filled.sum())
    ys, xs = np.nonzero(filled)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    hull = _convex_hull(points)
    solidity = float(filled.sum() / max(_polygon_area(hull), 1.0))
    boundary = filled & ~_erode(filled)
    by, bx = np.nonzero(boundary)
    cy, cx = ys.mean(), xs.mean()
    radii = np.hypot(bx - cx, by - cy)
    ratio = float(np.percentile(radii, 97) / max(np.percentile(radii, 3), 0.5))
    if hole_share > 0.12:
        shape = "ring"
    elif solidity < 0.8:
        shape = "star"
    elif ratio < 1.22:
        shape = "circle"
    elif ratio < 1.72:
        shape = "square"
    else:
        shape = "triangle"
    return Verdict(shape, colour, background, area, solidity, ratio, hole_share)


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    colours = np.asarray([palette[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(colours - rgb, axis=1)))]


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """For each pixel, whether all four neighbours are set (outside counts as unset)."""
    padded = np.pad(mask, 1, constant_values=False)
    return padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def _erode(mask: np.ndarray) -> np.ndarray:
    return mask & _neighbours(mask)


def _flood(mask: np.ndarray, seeds: list[tuple[int, int]]) -> np.ndarray:
    """Pixels of ``mask`` 4-connected to any seed."""
    reached = np.zeros_like(mask)
    queue = deque(s for s in seeds if mask[s])
    for s in queue:
        reached[s] = True
    h, w = mask.shape
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not reached[ny, nx]:
                reached[ny, nx] = True
                queue.append((ny, nx))
    return reached


def _largest_component(mask: np.ndarray) -> np.ndarray:
    remaining = mask.copy()
    best = np.zeros_like(mask)
    while remaining.any():
        seed = tuple(int(v) for v in np.argwhere(remaining)[0])
        component = _flood(remaining, [seed])  # type: ignore[list-item]
        remaining &= ~component
        if component.sum() > best.sum():
            best = component
    return best


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    edge = [(0, x) for x in range(w)] + [(h - 1, x) for x in range(w)]
    edge += [(y, 0) for y in range(h)] + [(y, w - 1) for y in range(h)]
    outside = _flood(~mask, edge)
    return ~outside


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain over pixel corners (so a hull has the pixels' extent)."""
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    corners = np.unique((points[:, None, :] + offsets[None]).reshape(-1, 2), axis=0)
    pts = sorted(map(tuple, corners))

    def cross(o: tuple[float, ...], a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, ...]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, ...]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1])


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
