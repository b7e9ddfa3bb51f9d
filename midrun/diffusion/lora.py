"""LoRA files as adapters: the base weights are never rewritten.

Each adapted module gets one forward hook that adds ``strength * scale * up(down(x))``
for every LoRA active on it. Which LoRAs are active, and how strongly, belongs to one call,
never to the shared model: :meth:`Adapters.applied` binds a small dict to the calling
context (a ``ContextVar``) for the duration of one forward pass, and the hooks read it from
there. So changing ``strength_model`` between two sampler steps costs nothing, and several
jobs share one copy of the base model, at the same time too, each with its own strengths.
What is shared (the hooks and the placed deltas) is only ever added to, under a lock.

Key styles read: kohya (``lora_unet_*``, ``lora_te_*``, ``lora_te1_*``, ``lora_te2_*``
with diffusers or original module names, ``.lora_down`` / ``.lora_up`` / ``.alpha``),
ComfyUI's original-layout names (``diffusion_model.input_blocks.…``) and diffusers / PEFT
(``unet.…``, ``text_encoder.…``, ``text_encoder_2.…`` with ``lora_A`` / ``lora_B``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from midrun.core.errors import MidrunError
from midrun.diffusion import ldm_keys

log = logging.getLogger(__name__)

#: Components a LoRA can adapt: the UNet and the first / second text encoder.
COMPONENTS = ("unet", "te1", "te2")

_PAIRS = (
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
)
_PREFIXES = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "te1"),
    ("lora_te2_", "te2"),
    ("lora_te_", "te1"),
    ("diffusion_model.", "unet"),
    ("unet.", "unet"),
    ("text_encoder_2.", "te2"),
    ("text_encoder.", "te1"),
)


class LoraError(MidrunError):
    type = "invalid_lora"


@dataclass(eq=False)
class LoraDelta:
    down: torch.Tensor
    up: torch.Tensor
    scale: float


_UIDS = itertools.count(1)


@dataclass(eq=False)
class LoraWeights:
    """A parsed LoRA file: (component, name as written in the file) -> delta. ``uid`` is
    never reused (unlike ``id()``), so adapters cannot mistake a new LoRA for a freed one."""

    name: str
    deltas: dict[tuple[str, str], LoraDelta]
    uid: int = field(default_factory=lambda: next(_UIDS))

    def components(self) -> set[str]:
        return {c for c, _ in self.deltas}


def parse_lora(state: Mapping[str, torch.Tensor], name: str) -> LoraWeights:
    deltas: dict[tuple[str, str], LoraDelta] = {}
    ignored = []
    for key, down in state.items():
        pair = next((p for p in _PAIRS if key.endswith(p[0])), None)
        if pair is None:
            if not key.endswith((".alpha", *(p[1] for p in _PAIRS))):
                ignored.append(key)
            continue
        base = key[: -len(pair[0])]
        up = state.get(base + pair[1])
        if up is None:
            raise LoraError(f"LoRA {name}: {key} has no matching {pair[1]!r} tensor")
        component, module = _split(base)
        if component is None:
            ignored.append(key)
            continue
        rank = down.shape[0]
        alpha = state.get(base + ".alpha")
        scale = float(alpha) / rank if alpha is not None else 1.0
        deltas[(component, module)] = LoraDelta(down.float(), up.float(), scale)
    if not deltas:
        raise LoraError(
            f"{name} holds no LoRA weights midrun recognises (kohya lora_unet_/lora_te_, "
            "ComfyUI diffusion_model., diffusers unet./text_encoder. keys)"
        )
    if ignored:
        log.warning("LoRA %s: %d keys not understood, e.g. %s", name, len(ignored), ignored[0])
    return LoraWeights(name, deltas)


def _split(base: str) -> tuple[str | None, str]:
    for prefix, component in _PREFIXES:
        if base.startswith(prefix):
            return component, base[len(prefix) :]
    return None, base


def load_lora(path: str | Path) -> LoraWeights:
    from midrun.diffusion.checkpoints import read_state_dict

    path = Path(path)
    return parse_lora(read_state_dict(path), path.name)


#: The strengths of the forward pass in progress in this context, per module tree: each
#: call binds its own (threads and asyncio tasks each see their own), nothing is stored on
#: the shared model. Never mutated in place; a call sets a new mapping and resets it after.
_ACTIVE: ContextVar[Mapping[Adapters, Mapping[int, float]]] = ContextVar("midrun_lora_active")
_NONE_ACTIVE: Mapping[Adapters, Mapping[int, float]] = MappingProxyType({})


class Adapters:
    """The LoRA hooks of one module tree (a UNet or a text encoder).

    ``aliases`` maps extra names (original-layout names, the files' ``text_model.``
    convention) to module names; names are matched dotted or with dots as underscores.
    The hooks and deltas are shared by every job on the model; which LoRAs are active, and
    how strongly, is the calling context's (:meth:`applied`).
    """

    def __init__(self, root: nn.Module, aliases: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.modules = dict(root.named_modules())
        self._lookup: dict[str, str] = {}
        for alias, name in [*((n, n) for n in self.modules), *(aliases or {}).items()]:
            if name in self.modules:
                self._lookup.setdefault(alias, name)
                self._lookup.setdefault(alias.replace(".", "_"), name)
        self._deltas: dict[str, dict[int, LoraDelta]] = {}
        self._hooks: dict[str, Any] = {}
        self._resolved: dict[tuple[int, str], list[str]] = {}
        self._finalized: set[int] = set()
        # Attaching and forgetting (jobs on other threads, the garbage collector) write the
        # shared tables; forward passes only read them and never wait for this lock.
        self._lock = threading.RLock()

    def resolve(self, lora: LoraWeights, component: str) -> list[str]:
        """Attach ``lora``'s deltas for ``component`` (once); return the module names."""
        key = (lora.uid, component)
        names = self._resolved.get(key)
        if names is not None:
            return names
        with self._lock:  # two jobs adding one LoRA must not hook a module twice
            names = self._resolved.get(key)
            if names is None:
                names = self._resolve(lora, component)
                self._resolved[key] = names
            return names

    def _resolve(self, lora: LoraWeights, component: str) -> list[str]:
        if lora.uid not in self._finalized:
            # When the LoRA is dropped (evicted and no job holds it), drop its deltas too.
            self._finalized.add(lora.uid)
            weakref.finalize(lora, self.forget, lora.uid)
        names = []
        unknown = []
        for (comp, written), delta in lora.deltas.items():
            if comp != component:
                continue
            name = self._lookup.get(written)
            if name is None:
                unknown.append(written)
                continue
            self._attach(name, lora.uid, delta)
            names.append(name)
        if unknown:
            log.warning(
                "LoRA %s: %d %s modules not found in this model, e.g. %s",
                lora.name,
                len(unknown),
                component,
                unknown[0],
            )
        return names

    def _attach(self, name: str, lora_id: int, delta: LoraDelta) -> None:
        module = self.modules[name]
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise LoraError(f"LoRA targets {name}, a {type(module).__name__}; expected a layer")
        weight = module.weight
        down, up = delta.down, delta.up
        if isinstance(module, nn.Conv2d):
            down = down.reshape(
                down.shape[0], down.shape[1], *down.shape[2:], *[1] * (4 - down.ndim)
            )
            up = up.reshape(up.shape[0], up.shape[1], 1, 1)
        else:
            down, up = down.flatten(1), up.flatten(1)
        if down.shape[1] != weight.shape[1] or up.shape[0] != weight.shape[0]:
            raise LoraError(
                f"LoRA shape {tuple(up.shape)}x{tuple(down.shape)} does not fit {name} "
                f"({tuple(weight.shape)}): is it for another model family?"
            )
        placed = LoraDelta(
            down.to(weight.device, weight.dtype), up.to(weight.device, weight.dtype), delta.scale
        )
        self._deltas.setdefault(name, {})[lora_id] = placed
        if name not in self._hooks:
            self._hooks[name] = module.register_forward_hook(self._hook(name, module))

    def _hook(self, name: str, module: nn.Module) -> Any:
        deltas = self._deltas[name]
        conv = isinstance(module, nn.Conv2d)

        def hook(_: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            active = _ACTIVE.get(_NONE_ACTIVE).get(self)
            if not active:
                return output
            x = args[0]
            for lora_id, strength in active.items():
                delta = deltas.get(lora_id)
                if delta is None or not strength:
                    continue
                if conv:
                    c: Any = module
                    h = F.conv2d(x, delta.down, None, c.stride, c.padding, c.dilation, c.groups)
                    h = F.conv2d(h, delta.up)
                else:
                    h = F.linear(F.linear(x, delta.down), delta.up)
                output = output + (strength * delta.scale) * h
            return output

        return hook

    @contextmanager
    def applied(self, uses: Iterable[tuple[LoraWeights, float]], component: str) -> Iterator[None]:
        """Exactly ``uses`` are active for the forward passes run inside this block, in this
        thread or task only; other callers of the same model see their own."""
        active: dict[int, float] = {}
        for lora, strength in uses:
            if self.resolve(lora, component):
                active[lora.uid] = active.get(lora.uid, 0.0) + float(strength)
        bound = _ACTIVE.get(_NONE_ACTIVE)
        if not active and self not in bound:  # the plain model: nothing to bind
            yield
            return
        token = _ACTIVE.set({**bound, self: active})
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def forget(self, uid: int) -> None:
        """Drop a LoRA's deltas."""
        with self._lock:
            for deltas in self._deltas.values():
                deltas.pop(uid, None)
            for key in [k for k in self._resolved if k[0] == uid]:
                del self._resolved[key]
            self._finalized.discard(uid)


def unet_aliases(unet: nn.Module) -> dict[str, str]:
    """Original-layout UNet module names -> diffusers names, for LoRA keys that use them."""
    module_map = ldm_keys.unet_module_map(unet.config)  # type: ignore[arg-type]
    aliases = {}
    for name, _ in unet.named_modules():
        ldm = ldm_keys.rename(f"{name}.weight", module_map)
        if ldm is not None:
            aliases[ldm.removesuffix(".weight")] = name
    return aliases


def text_aliases(encoder: nn.Module) -> dict[str, str]:
    """The files' ``text_model.…`` names -> the module's own names."""
    from midrun.diffusion.checkpoints import text_module_name

    return {text_module_name(name): name for name, _ in encoder.named_modules()}


@dataclass(eq=False)
class AdapterSet:
    """The adapters of one loaded model, per component, created on first use."""

    roots: dict[str, tuple[nn.Module, dict[str, str]]]
    adapters: dict[str, Adapters] = field(default_factory=dict)

    def get(self, component: str) -> Adapters | None:
        if component not in self.adapters:
            if component not in self.roots:
                return None
            root, aliases = self.roots[component]
            self.adapters[component] = Adapters(root, aliases)
        return self.adapters[component]
