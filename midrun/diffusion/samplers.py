"""Samplers as one step function each, over explicit state the executor can save.

The maths is k-diffusion's (Karras et al. 2022 in sigma terms: ``x = x0 + sigma * eps``,
``model(x, sigma)`` returns the denoised estimate), rewritten so that a sampler never
owns the loop: :func:`sample_step` advances a :class:`SamplerState` by one step and
everything a multistep method remembers (previous estimates, derivatives, step sizes)
lives in ``state.memory``. A state saved after step k and restored in another process
continues bit-identically, and the schedule, seed or model may change between steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from midrun.diffusion import tensors as _tensors  # noqa: F401 (registers the tensor codec)
from midrun.diffusion.noise import step_noise

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``model(x, sigma_per_batch_item) -> denoised``: the CFG-guided clean estimate."""


@dataclass(slots=True)
class SamplerState:
    """Where a sampler stands: ``x`` after ``step`` steps along ``sigmas``."""

    sampler: str
    sigmas: torch.Tensor  # float32, CPU, descending, last is the target level
    x: torch.Tensor
    seed: int = 0
    step: int = 0
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return max(len(self.sigmas) - 1, 0)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "sigmas": self.sigmas,
            "x": self.x,
            "seed": self.seed,
            "step": self.step,
            "memory": dict(self.memory),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerState:
        return cls(
            data["sampler"],
            data["sigmas"],
            data["x"],
            int(data["seed"]),
            int(data["step"]),
            dict(data["memory"]),
        )


@dataclass(slots=True)
class Step:
    """What one step function sees."""

    x: torch.Tensor
    sigmas: torch.Tensor  # on x's device
    i: int
    model: Denoise
    seed: int
    memory: dict[str, Any]

    @property
    def sigma(self) -> torch.Tensor:
        return self.sigmas[self.i]

    @property
    def sigma_next(self) -> torch.Tensor:
        return self.sigmas[self.i + 1]

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(x, sigma * x.new_ones([x.shape[0]]))

    def noise(self, draw: int = 0) -> torch.Tensor:
        return step_noise(self.seed, self.i, self.x, draw)


# -- helpers (k-diffusion's names) -------------------------------------------------------


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def get_ancestral_step(
    sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step into a deterministic part down to ``sigma_down`` and fresh noise of
    size ``sigma_up``."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def t_fn(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def sigma_fn(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def linear_multistep_coeff(order: int, t: list[float], i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial through
    t_i, t_{i-1}, ... (``order`` points) that is 1 at t_{i-j}; computed exactly."""
    poly = [1.0]  # coefficients, lowest degree first
    for k in range(order):
        if k == j:
            continue
        scale = t[i - j] - t[i - k]
        # multiply by (tau - t[i-k]) / scale
        shifted = [0.0, *poly]
        poly = [
            (shifted[n] - t[i - k] * (poly[n] if n < len(poly) else 0.0)) / scale
            for n in range(len(shifted))
        ]

    def integral(tau: float) -> float:
        return sum(c * tau ** (n + 1) / (n + 1) for n, c in enumerate(poly))

    return integral(t[i + 1]) - integral(t[i])


# -- the samplers ---------------------------------------------------------------------


def euler(s: Step) -> torch.Tensor:
    denoised = s.denoise(s.x, s.sigma)
    return s.x + to_d(s.x, s.sigma, denoised) * (s.sigma_next - s.sigma)


def ddim(s: Step) -> torch.Tensor:
    """DDIM with eta 0 (Song et al. 2021): re-noise the estimate to the next level along
    the predicted noise. In sigma terms this is the Euler step, written DDIM's way."""
    denoised = s.denoise(s.x, s.sigma)
    eps = (s.x - denoised) / s.sigma
    return denoised + eps * s.sigma_next


def euler_ancestral(s: Step) -> torch.Tensor:
    denoised = s.denoise(s.x, s.sigma)
    sigma_down, sigma_up = get_ancestral_step(s.sigma, s.sigma_next)
    x = s.x + to_d(s.x, s.sigma, denoised) * (sigma_down - s.sigma)
    if s.sigma_next > 0:
        x = x + s.noise() * sigma_up
    return x


def heun(s: Step) -> torch.Tensor:
    denoised = s.denoise(s.x, s.sigma)
    d = to_d(s.x, s.sigma, denoised)
    dt = s.sigma_next - s.sigma
    if s.sigma_next == 0:
        return s.x + d * dt
    x_2 = s.x + d * dt
    d_2 = to_d(x_2, s.sigma_next, s.denoise(x_2, s.sigma_next))
    return s.x + (d + d_2) / 2 * dt


def dpm_2(s: Step) -> torch.Tensor:
    denoised = s.denoise(s.x, s.sigma)
    d = to_d(s.x, s.sigma, denoised)
    if s.sigma_next == 0:
        return s.x + d * (s.sigma_next - s.sigma)
    sigma_mid = s.sigma.log().lerp(s.sigma_next.log(), 0.5).exp()
    x_2 = s.x + d * (sigma_mid - s.sigma)
    d_2 = to_d(x_2, sigma_mid, s.denoise(x_2, sigma_mid))
    return s.x + d_2 * (s.sigma_next - s.sigma)


def dpm_2_ancestral(s: Step) -> torch.Tensor:
    denoised = s.denoise(s.x, s.sigma)
    sigma_down, sigma_up = get_ancestral_step(s.sigma, s.sigma_next)
    d = to_d(s.x, s.sigma, denoised)
    if sigma_down == 0:
        x = s.x + d * (sigma_down - s.sigma)
    else:
        sigma_mid = s.sigma.log().lerp(sigma_down.log(), 0.5).exp()
        x_2 = s.x + d * (sigma_mid - s.sigma)
        d_2 = to_d(x_2, sigma_mid, s.denoise(x_2, sigma_mid))
        x = s.x + d_2 * (sigma_down - s.sigma)
    if sigma_up > 0:
        x = x + s.noise() * sigma_up
    return x


def lms(s: Step, order: int = 4) -> torch.Tensor:
    """Linear multistep: remembers up to ``order`` derivatives and the sigmas they were
    taken at."""
    denoised = s.denoise(s.x, s.sigma)
    ds: list[torch.Tensor] = [*s.memory.get("ds", []), to_d(s.x, s.sigma, denoised)][-order:]
    past: list[float] = [*s.memory.get("ds_sigmas", []), float(s.sigma)][-order:]
    s.memory["ds"], s.memory["ds_sigmas"] = ds, past
    cur_order = len(ds)
    # t[-1] is the current sigma, t[-2] the one before, ... and then the next sigma.
    t = [*past, float(s.sigma_next)]
    i = len(past) - 1
    coeffs = [linear_multistep_coeff(cur_order, t, i, j) for j in range(cur_order)]
    return s.x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds), strict=True))


def dpmpp_2m(s: Step) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022)."""
    denoised = s.denoise(s.x, s.sigma)
    t, t_next = t_fn(s.sigma), t_fn(s.sigma_next)
    h = t_next - t
    old_denoised = s.memory.get("old_denoised")
    if old_denoised is None or s.sigma_next == 0:
        x = (sigma_fn(t_next) / sigma_fn(t)) * s.x - (-h).expm1() * denoised
    else:
        h_last = t - t_fn(s.memory["sigma_prev"].to(s.x.device))
        r = h_last / h
        denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_fn(t_next) / sigma_fn(t)) * s.x - (-h).expm1() * denoised_d
    s.memory["old_denoised"] = denoised
    s.memory["sigma_prev"] = s.sigma.detach().cpu()
    return x


def dpmpp_2m_sde(s: Step, eta: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, midpoint variant."""
    denoised = s.denoise(s.x, s.sigma)
    old_denoised = s.memory.get("old_denoised")
    h = None
    if s.sigma_next == 0:
        x = denoised
    else:
        t, t_next = t_fn(s.sigma), t_fn(s.sigma_next)
        h = t_next - t
        eta_h = eta * h
        x = s.sigma_next / s.sigma * (-eta_h).exp() * s.x + (-h - eta_h).expm1().neg() * denoised
        if old_denoised is not None:
            r = s.memory["h_last"].to(s.x.device) / h
            x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
        if eta:
            x = x + s.noise() * s.sigma_next * (-2 * eta_h).expm1().neg().sqrt()
    s.memory["old_denoised"] = denoised
    if h is not None:
        s.memory["h_last"] = h.detach().cpu()
    return x


def dpmpp_sde(s: Step, eta: float = 1.0, r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ (stochastic, 2 model evaluations per step)."""
    denoised = s.denoise(s.x, s.sigma)
    if s.sigma_next == 0:
        return s.x + to_d(s.x, s.sigma, denoised) * (s.sigma_next - s.sigma)
    t, t_next = t_fn(s.sigma), t_fn(s.sigma_next)
    h = t_next - t
    t_mid = t + h * r
    fac = 1 / (2 * r)
    sd, su = get_ancestral_step(sigma_fn(t), sigma_fn(t_mid), eta)
    s_ = t_fn(sd)
    x_2 = (sigma_fn(s_) / sigma_fn(t)) * s.x - (t - s_).expm1() * denoised
    x_2 = x_2 + s.noise(0) * su
    denoised_2 = s.denoise(x_2, sigma_fn(t_mid))
    sd, su = get_ancestral_step(sigma_fn(t), sigma_fn(t_next), eta)
    t_next_ = t_fn(sd)
    denoised_d = (1 - fac) * denoised + fac * denoised_2
    x = (sigma_fn(t_next_) / sigma_fn(t)) * s.x - (t - t_next_).expm1() * denoised_d
    return x + s.noise(1) * su


def dpmpp_2s_ancestral(s: Step) -> torch.Tensor:
    denoised = s.denoise(s.x, s.sigma)
    sigma_down, sigma_up = get_ancestral_step(s.sigma, s.sigma_next)
    if sigma_down == 0:
        x = s.x + to_d(s.x, s.sigma, denoised) * (sigma_down - s.sigma)
    else:
        t, t_next = t_fn(s.sigma), t_fn(sigma_down)
        h = t_next - t
        t_mid = t + h / 2
        x_2 = (sigma_fn(t_mid) / sigma_fn(t)) * s.x - (-h / 2).expm1() * denoised
        denoised_2 = s.denoise(x_2, sigma_fn(t_mid))
        x = (sigma_fn(t_next) / sigma_fn(t)) * s.x - (-h).expm1() * denoised_2
    if s.sigma_next > 0:
        x = x + s.noise() * sigma_up
    return x


UNI_PC_FINAL_SIGMA = 0.001  # UniPC's bh1 update is undefined at sigma 0 (lambda = inf)


def uni_pc(s: Step, variant: str = "bh1") -> torch.Tensor:
    """UniPC (Zhao et al. 2023), multistep predictor-corrector on data predictions, order
    up to 3 with lower orders for the first and last steps, like ComfyUI's ``uni_pc``.
    In sigma terms alpha is 1 and lambda is ``-log sigma``. The corrector's model call at
    the new point is remembered and serves as the next step's estimate."""
    total = len(s.sigmas) - 1
    order = max(1, min(3, total - 1))
    models: list[torch.Tensor] = list(s.memory.get("models", []))
    sigmas_prev: list[torch.Tensor] = [t.to(s.x.device) for t in s.memory.get("sigmas", [])]
    if not models:
        models, sigmas_prev = [s.denoise(s.x, s.sigma)], [s.sigma]
    last = s.i + 1 == total
    sigma_t = s.sigma_next
    if sigma_t < UNI_PC_FINAL_SIGMA:
        sigma_t = torch.full_like(sigma_t, UNI_PC_FINAL_SIGMA)
    step_order = min(order, len(models), total - s.i)

    sigma_0, model_0 = sigmas_prev[-1], models[-1]
    lambda_0, lambda_t = t_fn(sigma_0), t_fn(sigma_t)
    h = lambda_t - lambda_0
    rks: list[torch.Tensor] = []
    d1s: list[torch.Tensor] = []
    for k in range(1, step_order):
        rk = (t_fn(sigmas_prev[-(k + 1)]) - lambda_0) / h
        rks.append(rk)
        d1s.append((models[-(k + 1)] - model_0) / rk)
    rks.append(torch.ones_like(h))
    r = torch.stack(rks)

    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b = [], []
    factorial = 1
    for n in range(1, step_order + 1):
        rows.append(r ** (n - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= n + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    big_r, b_vec = torch.stack(rows), torch.stack(b)

    x_base = (sigma_t / sigma_0) * s.x - h_phi_1 * model_0
    if d1s:
        rhos_p = (
            torch.tensor([0.5], device=s.x.device)
            if step_order == 2
            else torch.linalg.solve(big_r[:-1, :-1], b_vec[:-1])
        )
        x_t = x_base - b_h * sum(rho * d for rho, d in zip(rhos_p, d1s, strict=True))
    else:
        x_t = x_base
    if last:
        return x_t
    rhos_c = (
        torch.tensor([0.5], device=s.x.device)
        if step_order == 1
        else torch.linalg.solve(big_r, b_vec)
    )
    model_t = s.denoise(x_t, sigma_t)
    correction = rhos_c[-1] * (model_t - model_0)
    for rho, d in zip(rhos_c[:-1], d1s, strict=True):
        correction = correction + rho * d
    x_t = x_base - b_h * correction
    s.memory["models"] = [*models, model_t][-order:]
    s.memory["sigmas"] = [t.detach().cpu() for t in [*sigmas_prev, sigma_t][-order:]]
    return x_t


@dataclass(frozen=True, slots=True)
class Sampler:
    name: str
    step: Callable[[Step], torch.Tensor]
    stochastic: bool = False


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("euler", euler),
        Sampler("euler_ancestral", euler_ancestral, stochastic=True),
        Sampler("heun", heun),
        Sampler("dpm_2", dpm_2),
        Sampler("dpm_2_ancestral", dpm_2_ancestral, stochastic=True),
        Sampler("lms", lms),
        Sampler("dpmpp_2s_ancestral", dpmpp_2s_ancestral, stochastic=True),
        Sampler("dpmpp_sde", dpmpp_sde, stochastic=True),
        Sampler("dpmpp_2m", dpmpp_2m),
        Sampler("dpmpp_2m_sde", dpmpp_2m_sde, stochastic=True),
        Sampler("ddim", ddim),
        Sampler("uni_pc", uni_pc),
    )
}


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"Sampler {name!r} is not implemented; available: {', '.join(SAMPLERS)}"
        ) from None


def start(sampler: str, sigmas: torch.Tensor, x: torch.Tensor, seed: int = 0) -> SamplerState:
    """A fresh state: ``x`` is the noised latent at ``sigmas[0]``."""
    get_sampler(sampler)
    return SamplerState(sampler, sigmas.detach().float().cpu(), x, int(seed))


def sample_step(state: SamplerState, model: Denoise) -> SamplerState:
    """Advance one step; returns a new state (the old one is left as it was)."""
    if state.done:
        raise ValueError("the sampler has already reached its last sigma")
    memory = dict(state.memory)
    step = Step(
        x=state.x,
        sigmas=state.sigmas.to(state.x.device),
        i=state.step,
        model=model,
        seed=state.seed,
        memory=memory,
    )
    with torch.no_grad():
        x = get_sampler(state.sampler).step(step)
    return SamplerState(state.sampler, state.sigmas, x, state.seed, state.step + 1, memory)


def replan(state: SamplerState, remaining: torch.Tensor) -> SamplerState:
    """Replace the sigmas still ahead with ``remaining`` (which starts at the current
    sigma); the steps taken so far, and the sampler's memory of them, stay."""
    current = state.sigmas[state.step]
    if remaining.numel() < 1 or not math.isclose(
        float(remaining[0]), float(current), rel_tol=1e-5, abs_tol=1e-8
    ):
        raise ValueError("a new schedule must start at the current sigma")
    sigmas = torch.cat([state.sigmas[: state.step + 1], remaining[1:].float().cpu()])
    return SamplerState(state.sampler, sigmas, state.x, state.seed, state.step, dict(state.memory))
