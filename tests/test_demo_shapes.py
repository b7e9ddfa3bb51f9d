"""The demo model's procedural dataset and the checker that grades generated images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from midrun.demo_model import checker, shapes


def test_dataset_is_reproducible_and_captioned() -> None:
    first = list(shapes.specs(7, 20))
    assert first == list(shapes.specs(7, 20))
    assert first != list(shapes.specs(8, 20))
    spec = first[0]
    assert spec.caption == f"a {spec.colour} {spec.shape} on a {spec.background} background"
    assert shapes.render(spec).tobytes() == shapes.render(spec).tobytes()
    assert shapes.render(spec).size == (64, 64)


def test_held_out_triples_never_appear_in_training() -> None:
    train, held = shapes.split()
    assert held and len(held) < len(train)
    assert set(train).isdisjoint(held)
    assert all((s.colour, s.shape, s.background) in train for s in shapes.specs(1, 500))
    assert all((s.colour, s.shape, s.background) in held for s in shapes.specs(1, 50, True))
    # Every colour, shape and background is still seen in training.
    for i, values in enumerate((shapes.COLOURS, shapes.SHAPES, shapes.BACKGROUNDS)):
        assert {t[i] for t in train} == set(values)


def test_shapes_stand_upright_within_the_tilt() -> None:
    for tilt in (0.0, 10.0, 45.0):
        for spec in shapes.specs(2, 200, tilt=tilt):
            off = math.degrees(spec.rotation - shapes.UPRIGHT[spec.shape])
            assert abs(off) <= tilt + 1e-9, spec
    # A level square fills its bounding box; a tilted one does not.
    square = next(s for s in shapes.specs(2, 50, tilt=0.0) if s.shape == "square")
    mask = np.linalg.norm(np.asarray(shapes.render(square), np.float32)
                          - shapes.BACKGROUNDS[square.background], axis=-1) > 60  # fmt: skip
    ys, xs = np.nonzero(mask)
    assert mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)) > 0.9
    # 180: any angle, drawn as the first demo model's data was.
    angles = [s.rotation for s in shapes.specs(2, 200, tilt=180.0)]
    assert min(angles) >= 0 and max(angles) > 5.5 and min(angles) < 0.8


@pytest.mark.parametrize("tilt", [shapes.TILT, 180.0])
@pytest.mark.parametrize("held_out", [False, True])
def test_checker_reads_every_rendered_shape_and_colour(held_out: bool, tilt: float) -> None:
    for spec in shapes.specs(3, 150, held_out, tilt):
        verdict = checker.classify(shapes.render(spec))
        assert (verdict.shape, verdict.colour, verdict.background) == (
            spec.shape, spec.colour, spec.background
        ), spec  # fmt: skip


def test_checker_survives_blur_and_noise() -> None:
    """Generated images are softer and noisier than the renders."""
    rng = np.random.default_rng(0)
    for spec in shapes.specs(4, 60):
        image = shapes.render(spec).filter(ImageFilter.GaussianBlur(0.8))
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 10, (64, 64, 3))
        image = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        verdict = checker.classify(image)
        assert (verdict.shape, verdict.colour) == (spec.shape, spec.colour), spec


def test_checker_says_unknown_for_an_empty_image() -> None:
    blank = Image.new("RGB", (64, 64), shapes.BACKGROUNDS["gray"])
    verdict = checker.classify(blank)
    assert verdict.shape == "unknown" and verdict.colour == "unknown"
    assert verdict.background == "gray"
