"""LoRA strengths belong to one call, not to the shared base model: two threads calling
one cached model with different strengths at the same time each get their solo result."""

from __future__ import annotations

import threading

import torch

from midrun.diffusion.models import DiffusionModel, TextEncoder
from tests.diffusion.conftest import LORAS, SD15_CKPT, models, runtime  # noqa: F401

WAIT = 60  # seconds; only a guard against a hang, never a synchronisation


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([500.0]), context


def _interleaved(module: torch.nn.Module, first, second) -> dict[str, object]:
    """Run ``first()`` in a thread that is held inside ``module``'s forward (its LoRAs
    already switched on) until ``second()`` has run whole in another thread."""
    inside, second_done = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold(_module: torch.nn.Module, _args: object) -> None:
        if threading.current_thread().name == "first":
            inside.set()
            assert second_done.wait(WAIT), "the second call never finished"

    def run(name: str, fn, after=None) -> None:
        try:
            results[name] = fn()
        except BaseException as exc:  # reported by the test below
            results[name] = exc
        finally:
            if after is not None:
                after.set()

    handle = module.register_forward_pre_hook(hold)
    try:
        a = threading.Thread(target=run, args=("first", first), name="first")
        a.start()
        assert inside.wait(WAIT), "the first call never reached the held layer"
        b = threading.Thread(target=run, args=("second", second, second_done), name="second")
        b.start()
        b.join(WAIT)
        a.join(WAIT)
    finally:
        handle.remove()
    assert not a.is_alive() and not b.is_alive()
    for value in results.values():
        if isinstance(value, BaseException):
            raise value
    return results


def test_two_threads_on_one_unet_each_get_their_own_lora_strength(runtime) -> None:  # noqa: F811
    base = runtime.checkpoint(SD15_CKPT)
    lora = runtime.lora(LORAS["kohya"])
    weak = DiffusionModel(base).with_lora(lora, 0.5)
    strong = DiffusionModel(base).with_lora(lora, 1.5)
    x, t, context = _inputs()
    solo_weak, solo_strong = weak.predict(x, t, context), strong.predict(x, t, context)
    assert not torch.equal(solo_weak, solo_strong)
    # The weak call is held halfway through the UNet while the strong one runs whole.
    results = _interleaved(
        base.components.unet.mid_block,
        lambda: weak.predict(x, t, context),
        lambda: strong.predict(x, t, context),
    )
    assert torch.equal(results["first"], solo_weak)
    assert torch.equal(results["second"], solo_strong)
    # And the plain model, called after both, is untouched by either.
    assert torch.equal(
        DiffusionModel(base).predict(x, t, context), DiffusionModel(base).predict(x, t, context)
    )
    assert not torch.equal(DiffusionModel(base).predict(x, t, context), solo_weak)


def test_two_threads_on_one_text_encoder_each_get_their_own_lora_strength(runtime) -> None:  # noqa: F811
    base = runtime.checkpoint(SD15_CKPT)
    lora = runtime.lora(LORAS["kohya"])
    weak, strong = TextEncoder(base).with_lora(lora, 0.5), TextEncoder(base).with_lora(lora, 1.5)
    text = "a red star on a white background"
    solo_weak, solo_strong = weak.encode(text)[0][0], strong.encode(text)[0][0]
    assert not torch.equal(solo_weak, solo_strong)
    encoder = base.components.text_encoders[0]
    layers = [m for n, m in encoder.named_modules() if n.rsplit(".", 2)[-2:-1] == ["layers"]]
    results = _interleaved(
        layers[-1],  # the last transformer layer
        lambda: weak.encode(text)[0][0],
        lambda: strong.encode(text)[0][0],
    )
    assert torch.equal(results["first"], solo_weak)
    assert torch.equal(results["second"], solo_strong)
