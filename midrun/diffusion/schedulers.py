"""Sigma schedulers: how ``steps`` sampling steps are spread over a model's noise levels.

Each returns a descending float32 tensor of ``steps + 1`` sigmas ending in 0 (``beta``
may return fewer when quantiles collide, as ComfyUI's does). :func:`sampling_sigmas`
applies KSampler's rules on top: ``denoise`` < 1 takes the tail of a longer schedule,
and the two-evaluation DPM2 samplers drop the penultimate sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from midrun.diffusion.schedule import DiscreteSchedule

Scheduler = Callable[[DiscreteSchedule, int], torch.Tensor]


def _with_zero(sigmas: list[float] | torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    return torch.cat([values, values.new_zeros(1)])


def karras(schedule: DiscreteSchedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): uniform in ``sigma ** (1 / rho)``."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = schedule.sigma_min ** (1 / rho)
    max_inv_rho = schedule.sigma_max ** (1 / rho)
    return _with_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Uniform in log sigma."""
    log_max, log_min = math.log(schedule.sigma_max), math.log(schedule.sigma_min)
    return _with_zero(torch.linspace(log_max, log_min, steps).exp())


def normal(schedule: DiscreteSchedule, steps: int, sgm: bool = False) -> torch.Tensor:
    """Uniform in training timesteps, from the noisiest to the cleanest."""
    start = schedule.timestep(torch.tensor(schedule.sigma_max))
    end = schedule.timestep(torch.tensor(schedule.sigma_min))
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        timesteps = torch.linspace(float(start), float(end), steps)
    return _with_zero([float(schedule.sigma(t)) for t in timesteps])


def sgm_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Like ``normal`` but over ``steps + 1`` points without the last (SGM's spacing)."""
    return normal(schedule, steps, sgm=True)


def simple(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Every ``len / steps``-th training sigma, from the top."""
    stride = len(schedule.sigmas) / steps
    return _with_zero([float(schedule.sigmas[-(1 + int(i * stride))]) for i in range(steps)])


def ddim_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """DDIM's spacing: every ``len // steps``-th training sigma from index 1 up."""
    stride = max(len(schedule.sigmas) // steps, 1)
    picked = [float(schedule.sigmas[i]) for i in range(1, len(schedule.sigmas), stride)]
    return torch.tensor([0.0, *picked], dtype=torch.float32).flip(0)


def beta(
    schedule: DiscreteSchedule, steps: int, alpha: float = 0.6, beta_: float = 0.6
) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (arXiv:2407.12173):
    dense at both ends. Repeated timesteps are dropped."""
    total = len(schedule.sigmas) - 1
    sigmas: list[float] = []
    last = -1
    for i in range(steps):
        t = round(beta_ppf(1 - i / steps, alpha, beta_) * total)
        if t != last:
            sigmas.append(float(schedule.sigmas[t]))
        last = t
    return _with_zero(sigmas)


SCHEDULERS: dict[str, Scheduler] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
    "simple": simple,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
}

# Samplers that evaluate the model twice per step at a midpoint; ComfyUI gives them one
# more step and drops the penultimate sigma, so the last step lands on a useful level.
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc"})


def scheduler_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int) -> torch.Tensor:
    try:
        fn = SCHEDULERS[scheduler]
    except KeyError:
        raise ValueError(
            f"Unknown scheduler {scheduler!r}; available: {', '.join(SCHEDULERS)}"
        ) from None
    return fn(schedule, steps)


def sampling_sigmas(
    schedule: DiscreteSchedule, scheduler: str, steps: int, sampler: str, denoise: float = 1.0
) -> torch.Tensor:
    """The sigmas a KSampler with these settings walks (ComfyUI's ``set_steps``)."""
    if steps < 1:
        return torch.zeros(0)

    def full(n: int) -> torch.Tensor:
        if sampler in DISCARD_PENULTIMATE:
            sigmas = scheduler_sigmas(schedule, scheduler, n + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return scheduler_sigmas(schedule, scheduler, n)

    if denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    return full(int(steps / denoise))[-(steps + 1) :]


# -- the Beta distribution's quantile function, without scipy --------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The inverse of :func:`beta_cdf` in ``x``, by bisection to double precision."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        if beta_cdf(mid, a, b) < q:
            low = mid
        else:
            high = mid
        if high - low < 1e-15:
            break
    return (low + high) / 2
