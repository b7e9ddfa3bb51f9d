"""The values that flow between diffusion nodes: MODEL, CLIP and VAE.

A :class:`LoadedModel` is one checkpoint's modules, placed on a device, shared by every
job through the model cache. The node values are light views of it: a
:class:`DiffusionModel` is the base UNet plus the LoRAs (and strengths) applied to it, a
:class:`TextEncoder` the text encoders plus their LoRAs and the hidden layer to read, a
:class:`VAEModel` a VAE. LoRAs are adapters switched on for one call only (the strengths
are the value's, bound to the calling thread or task while its forward pass runs), so two
jobs with different strengths share one base, at the same time too, and a strength edit
needs no reload.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from midrun.diffusion.checkpoints import Components
from midrun.diffusion.devices import Placement
from midrun.diffusion.families import Family
from midrun.diffusion.lora import (
    Adapters,
    AdapterSet,
    LoraWeights,
    text_aliases,
    unet_aliases,
)
from midrun.diffusion.schedule import DiscreteSchedule
from midrun.diffusion.tokenizer import END, START, clip_tokenizer

#: ComfyUI's conditioning value: a list of ``[cross_attn_tensor, {"pooled_output": ...}]``.
Conditioning = list[list[Any]]

CHUNK = 75  # tokens per CLIP window, between the start and end tokens


@dataclass(eq=False)
class LoadedModel:
    """A checkpoint's modules on their device; shared, never mutated by a job."""

    name: str
    components: Components
    placement: Placement
    adapters: AdapterSet = field(init=False)

    def __post_init__(self) -> None:
        c = self.components
        roots: dict[str, Any] = {"unet": (c.unet, unet_aliases(c.unet))}
        for index, encoder in enumerate(c.text_encoders, start=1):
            roots[f"te{index}"] = (encoder, text_aliases(encoder))
        self.adapters = AdapterSet(roots)
        self.schedule = DiscreteSchedule(c.schedule)

    @property
    def family(self) -> Family:
        return self.components.family

    def nbytes(self) -> int:
        c = self.components
        return sum(
            p.numel() * p.element_size()
            for m in (c.unet, c.vae, *c.text_encoders)
            if m is not None
            for p in m.parameters()
        )


LoraUse = tuple[LoraWeights, float]


@dataclass(frozen=True, eq=False)
class DiffusionModel:
    """MODEL: the base UNet with LoRAs applied at given strengths."""

    base: LoadedModel
    loras: tuple[LoraUse, ...] = ()

    @property
    def family(self) -> Family:
        return self.base.family

    @property
    def schedule(self) -> DiscreteSchedule:
        return self.base.schedule

    def with_lora(self, lora: LoraWeights, strength: float) -> DiffusionModel:
        return replace(self, loras=(*self.loras, (lora, float(strength))))

    def describe(self) -> dict[str, Any]:
        """What this model is, as plain data (saved with a paused sampler, and compared
        with the model a resumed job gets)."""
        return {
            "checkpoint": self.base.name,
            "family": self.family.name,
            "loras": [[lora.name, strength] for lora, strength in self.loras],
        }

    def predict(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        added: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The UNet's raw prediction, with this model's LoRAs switched on."""
        unet = self.base.components.unet
        adapters = self.base.adapters.get("unet")
        dtype = self.base.placement.dtype
        with _applied(adapters, self.loras, "unet"), torch.no_grad():
            out = unet(
                x.to(dtype),
                timestep,
                encoder_hidden_states=context.to(dtype),
                added_cond_kwargs={k: v.to(dtype) for k, v in added.items()} if added else None,
                return_dict=False,
            )[0]
        return out.float()


@dataclass(frozen=True, eq=False)
class TextEncoder:
    """CLIP: the text encoders, their LoRAs, and which hidden layer to read."""

    base: LoadedModel
    loras: tuple[LoraUse, ...] = ()
    layer: int | None = None  # CLIPSetLastLayer's stop_at_clip_layer; None: the family's

    @property
    def family(self) -> Family:
        return self.base.family

    def with_lora(self, lora: LoraWeights, strength: float) -> TextEncoder:
        return replace(self, loras=(*self.loras, (lora, float(strength))))

    def with_layer(self, layer: int) -> TextEncoder:
        return replace(self, layer=layer)

    def encode(self, text: str) -> Conditioning:
        """Long prompts are split into 75-token windows, encoded separately and joined,
        as ComfyUI does; the pooled output comes from the first window."""
        family = self.family
        encoders = self.base.components.text_encoders
        device = self.base.placement.device
        hidden_parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for index, (encoder, (default_layer, norm), pad) in enumerate(
            zip(encoders, family.text_layers, family.pad_tokens, strict=True), start=1
        ):
            adapters = self.base.adapters.get(f"te{index}")
            ids = token_windows(text, pad)
            layer = self.layer if self.layer is not None else default_layer
            with _applied(adapters, self.loras, f"te{index}"), torch.no_grad():
                out = encoder(input_ids=ids.to(device), output_hidden_states=True, return_dict=True)
            states = out.hidden_states
            if -layer > len(states) - 1:
                raise ValueError(
                    f"stop_at_clip_layer {layer}: this text encoder has {len(states) - 1} layers"
                )
            hidden = states[layer]
            if norm:
                hidden = _final_norm(encoder)(hidden)
            hidden_parts.append(hidden.float().reshape(1, -1, hidden.shape[-1]))
            if family.pooled and getattr(out, "text_embeds", None) is not None:
                pooled = out.text_embeds[:1].float()
        cond = torch.cat(hidden_parts, dim=-1).cpu()
        extra: dict[str, Any] = {}
        if pooled is not None:
            extra["pooled_output"] = pooled.cpu()
        return [[cond, extra]]


def _applied(
    adapters: Adapters | None, loras: Sequence[LoraUse], component: str
) -> AbstractContextManager[None]:
    """This call's LoRAs on the shared model, for this call only."""
    return adapters.applied(loras, component) if adapters is not None else nullcontext()


def _final_norm(encoder: Any) -> Any:
    model = getattr(encoder, "text_model", encoder)
    return model.final_layer_norm


def token_windows(text: str, pad: str = END) -> torch.Tensor:
    """Token ids of ``text`` as rows of 77: start, up to 75 tokens, end, padding."""
    tokenizer = _tokenizer(pad)
    ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    start = tokenizer.convert_tokens_to_ids(START)
    end = tokenizer.convert_tokens_to_ids(END)
    pad_id = tokenizer.convert_tokens_to_ids(pad)
    windows = []
    for i in range(0, max(len(ids), 1), CHUNK):
        chunk = ids[i : i + CHUNK]
        row = [start, *chunk, end]
        windows.append(row + [pad_id] * (CHUNK + 2 - len(row)))
    return torch.tensor(windows, dtype=torch.long)


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(pad: str) -> Any:
    if pad not in _TOKENIZERS:
        _TOKENIZERS[pad] = clip_tokenizer(pad_token=pad)
    return _TOKENIZERS[pad]


@dataclass(frozen=True, eq=False)
class VAEModel:
    """VAE: images (B, H, W, C floats in 0..1, ComfyUI's IMAGE) to unscaled latents and back."""

    vae: Any
    family: Family
    placement: Placement
    name: str = ""

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        dtype = self.placement.vae_dtype
        with torch.no_grad():
            images = self.vae.decode(latent.to(self.placement.device, dtype), return_dict=False)[0]
        return ((images.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images[..., :3].permute(0, 3, 1, 2) * 2.0 - 1.0
        factor = self.downscale
        h, w = pixels.shape[2] // factor * factor, pixels.shape[3] // factor * factor
        pixels = pixels[:, :, :h, :w]
        dtype = self.placement.vae_dtype
        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.placement.device, dtype), return_dict=False)[0]
        return dist.mode().float().cpu()


def batch_conditioning(parts: Sequence[Conditioning]) -> Conditioning:
    """ConditioningCombine: all entries of each input."""
    return [entry for part in parts for entry in part]
