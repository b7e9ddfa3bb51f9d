"""The noise schedule of a discrete-time diffusion model, seen in k-diffusion's sigma terms.

SD1.5 and SDXL were trained on 1000 timesteps with a "scaled linear" beta schedule; in
sigma terms ``x_t = x_0 + sigma_t * noise``. Samplers work on sigmas; the UNet wants a
timestep, and scales its input by ``1 / sqrt(sigma^2 + 1)``. The conventions (nearest
timestep for a sigma, log-linear interpolation for fractional timesteps) are ComfyUI's,
so schedules match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Prediction = Literal["eps", "v_prediction"]


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """What a checkpoint's scheduler config says about its training noise."""

    beta_start: float = 0.00085
    beta_end: float = 0.012
    timesteps: int = 1000
    prediction: Prediction = "eps"


class DiscreteSchedule:
    """Sigmas of a model trained on ``timesteps`` discrete steps (ascending: index 0 is
    the least noise)."""

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        self.config = config or ScheduleConfig()
        c = self.config
        betas = (
            torch.linspace(c.beta_start**0.5, c.beta_end**0.5, c.timesteps, dtype=torch.float64)
            ** 2
        )
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @property
    def prediction(self) -> Prediction:
        return self.config.prediction

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (possibly fractional) timestep, interpolated in log space."""
        t = timestep.float().clamp(0, len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The training timestep nearest to ``sigma`` (as a float tensor)."""
        dists = sigma.float().log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).float().to(sigma.device)

    def model_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What the UNet sees: ``x / sqrt(sigma^2 + 1)``."""
        return x / (sigma**2 + 1.0) ** 0.5

    def denoised(
        self, model_output: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """The clean-image estimate from the UNet's prediction."""
        if self.prediction == "v_prediction":
            return x / (sigma**2 + 1.0) - model_output * sigma / (sigma**2 + 1.0) ** 0.5
        return x - model_output * sigma
