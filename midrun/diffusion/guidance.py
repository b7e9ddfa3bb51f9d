"""Classifier-free guidance: the denoiser the samplers call, ``(x, sigma) -> denoised``.

The UNet sees ``x / sqrt(sigma^2 + 1)`` at the training timestep nearest to ``sigma`` and
predicts the noise (or v); that becomes a clean estimate per conditioning entry. Entries
of one side (ConditioningCombine) are averaged; the result is
``negative + cfg * (positive - negative)``. Positive and negative run in one batch when
their token lengths agree. With ``cfg == 1`` the negative is skipped, as in ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from midrun.diffusion.models import Conditioning, DiffusionModel


@dataclass(eq=False)
class Guidance:
    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning
    cfg: float
    image_size: tuple[int, int]  # (height, width) in pixels: SDXL's size conditioning

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        schedule = self.model.schedule
        device = self.model.base.placement.device
        x = x.to(device)
        sigma = sigma.to(device)
        batch = x.shape[0]
        s = sigma.view(-1, 1, 1, 1)
        x_in = schedule.model_input(x, s)
        timestep = schedule.timestep(sigma)
        entries = [(e, True) for e in self.positive]
        if self.cfg != 1.0:
            entries += [(e, False) for e in self.negative]
        outputs = self._predict(x_in, timestep, [e for e, _ in entries], batch)
        pos = [schedule.denoised(o, x, s) for o, (_, p) in zip(outputs, entries, strict=True) if p]
        neg = [
            schedule.denoised(o, x, s) for o, (_, p) in zip(outputs, entries, strict=True) if not p
        ]
        cond = torch.stack(pos).mean(0) if len(pos) > 1 else pos[0]
        if not neg:
            return cond
        uncond = torch.stack(neg).mean(0) if len(neg) > 1 else neg[0]
        return uncond + (cond - uncond) * self.cfg

    def _predict(
        self, x_in: torch.Tensor, timestep: torch.Tensor, entries: list[Any], batch: int
    ) -> list[torch.Tensor]:
        device = x_in.device
        contexts = [e[0].to(device) for e in entries]
        added = [self._added(e, device) for e in entries]
        if len({c.shape for c in contexts}) == 1:
            groups = [list(range(len(entries)))]
        else:
            groups = [[i] for i in range(len(entries))]
        outputs: list[torch.Tensor] = [torch.empty(0)] * len(entries)
        for group in groups:
            n = len(group)
            context = torch.cat([contexts[i].expand(batch, -1, -1) for i in group])
            extra = None
            if added[group[0]] is not None:
                extra = {
                    k: torch.cat([added[i][k].expand(batch, -1) for i in group])  # type: ignore[index]
                    for k in ("text_embeds", "time_ids")
                }
            out = self.model.predict(x_in.repeat(n, 1, 1, 1), timestep.repeat(n), context, extra)
            for j, i in enumerate(out.chunk(n)):
                outputs[group[j]] = i
        return outputs

    def _added(self, entry: Any, device: torch.device) -> dict[str, torch.Tensor] | None:
        if not self.model.family.pooled:
            return None
        unet_config = self.model.base.components.unet.config
        pooled = entry[1].get("pooled_output")
        pooled_dim = (
            unet_config.projection_class_embeddings_input_dim
            - 6 * unet_config.addition_time_embed_dim
        )
        if pooled is None:
            pooled = torch.zeros(1, pooled_dim)
        h, w = self.image_size
        # (original size, crop top-left, target size), as SDXL was trained.
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)
        return {"text_embeds": pooled.to(device), "time_ids": time_ids.to(device)}
