"""Samplers agree with k-diffusion, schedulers with their definitions, and a sampler
stopped at any step, saved and restored in a fresh process finishes bit-identically."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midrun.diffusion.noise import initial_noise, step_noise
from midrun.diffusion.samplers import SAMPLERS, SamplerState, replan, sample_step, start
from midrun.diffusion.schedule import DiscreteSchedule
from midrun.diffusion.schedulers import (
    SCHEDULERS,
    beta_ppf,
    sampling_sigmas,
    scheduler_sigmas,
)
from midrun.engine.checkpoint import InFlightStep, WorkflowCheckpoint
from midrun.engine.codec import Decoder, Encoder
from midrun.engine.runstate import RunState
from tests.diffusion.reference import MixtureDenoiser, load_k_diffusion_sampling

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = DiscreteSchedule()
SEED = 1234

# k-diffusion's name for each of ours (ddim is Euler in sigma terms: DDIM with eta 0).
# k-diffusion has no UniPC; it is checked against the exact ODE solution instead.
K_NAMES = {name: name for name in SAMPLERS if name != "uni_pc"} | {"ddim": "euler"}


def run_ours(sampler: str, sigmas: torch.Tensor, x: torch.Tensor, model) -> torch.Tensor:
    state = start(sampler, sigmas, x, SEED)
    while not state.done:
        state = sample_step(state, model)
    return state.x


class MatchingNoise:
    """A k-diffusion noise sampler handing out exactly our per-step draws: the step is
    the schedule index of the first sigma it is called with, the draw counts calls."""

    def __init__(self, sigmas: torch.Tensor, like: torch.Tensor) -> None:
        self.sigmas, self.like = sigmas, like
        self.draws: dict[int, int] = {}

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        i = int((self.sigmas - float(sigma)).abs().argmin())
        draw = self.draws.get(i, 0)
        self.draws[i] = draw + 1
        return step_noise(SEED, i, self.like, draw)


@pytest.mark.parametrize("scheduler", ["karras", "normal", "exponential"])
@pytest.mark.parametrize("sampler", sorted(K_NAMES))
def test_sampler_agrees_with_k_diffusion(sampler: str, scheduler: str) -> None:
    k = load_k_diffusion_sampling()
    sigmas = sampling_sigmas(SCHEDULE, scheduler, 12, sampler)
    x = initial_noise(SEED, (2, 4, 8, 8)) * sigmas[0]
    ours = run_ours(sampler, sigmas, x, MixtureDenoiser())
    reference_fn = getattr(k, f"sample_{K_NAMES[sampler]}")
    kwargs = {"disable": True}
    if SAMPLERS[sampler].stochastic:
        kwargs["noise_sampler"] = MatchingNoise(sigmas, x)
    theirs = reference_fn(MixtureDenoiser(), x.clone(), sigmas.clone(), **kwargs)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    # And the result is a sample, not noise: every element near one of the two modes.
    assert (ours.abs() - 1).abs().mean() < 0.5


def test_samplers_converge_to_the_exact_ode_solution() -> None:
    """For Gaussian data the probability-flow ODE is solvable in closed form, so the
    deterministic samplers' error can be measured, not just compared."""
    s, mu = 0.5, 0.25

    def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1)
        return (s * s * x + sigma**2 * mu) / (s * s + sigma**2)

    x0 = torch.linspace(-3, 3, 16, dtype=torch.float64).reshape(1, 16) * 10
    orders = {}
    for sampler in ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim", "uni_pc"):
        errors = []
        for steps in (10, 40):
            sigmas = scheduler_sigmas(SCHEDULE, "karras", steps).double()
            sigmas[-1] = 0.02  # stop short of 0: the exact solution there is well defined
            exact = mu + (x0 - mu) * ((s * s + 0.02**2) / (s * s + sigmas[0] ** 2)) ** 0.5
            state = SamplerState(sampler, sigmas, x0.clone())
            while not state.done:
                state = sample_step(state, gaussian)
            errors.append(float((state.x - exact).abs().max()))
        assert errors[1] < errors[0] / 3, (sampler, errors)
        orders[sampler] = math.log(errors[0] / errors[1], 4)
    # Convergence order measured over a 4x finer grid: Euler ~1, the others higher.
    assert orders["euler"] < 1.5 and orders["ddim"] < 1.5
    assert min(orders["heun"], orders["dpmpp_2m"], orders["uni_pc"]) > 1.7, orders


def test_schedulers_match_k_diffusion_and_their_definitions() -> None:
    k = load_k_diffusion_sampling()
    lo, hi = SCHEDULE.sigma_min, SCHEDULE.sigma_max
    assert torch.allclose(scheduler_sigmas(SCHEDULE, "karras", 20), k.get_sigmas_karras(20, lo, hi))
    assert torch.allclose(
        scheduler_sigmas(SCHEDULE, "exponential", 20), k.get_sigmas_exponential(20, lo, hi)
    )
    for name in SCHEDULERS:
        sigmas = scheduler_sigmas(SCHEDULE, name, 20)
        assert sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all()), name
        assert len(sigmas) == 21 or name == "beta", name
    # SD1.5's training noise range.
    assert abs(hi - 14.6146) < 1e-3 and abs(lo - 0.0292) < 1e-3
    assert scheduler_sigmas(SCHEDULE, "normal", 20)[0] == pytest.approx(hi, rel=1e-5)
    assert scheduler_sigmas(SCHEDULE, "simple", 20)[1] == SCHEDULE.sigmas[-51]
    assert scheduler_sigmas(SCHEDULE, "ddim_uniform", 20)[-2] == SCHEDULE.sigmas[1]
    assert scheduler_sigmas(SCHEDULE, "ddim_uniform", 20)[0] == SCHEDULE.sigmas[951]


def test_beta_quantiles_match_scipy() -> None:
    from scipy.stats import beta as beta_distribution

    for q in (0.0, 1e-6, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0):
        for a, b in ((0.6, 0.6), (2.0, 5.0), (0.5, 1.5)):
            assert beta_ppf(q, a, b) == pytest.approx(
                float(beta_distribution.ppf(q, a, b)), abs=1e-9
            )


def test_denoise_and_two_evaluation_samplers_follow_ksampler_rules() -> None:
    full = sampling_sigmas(SCHEDULE, "normal", 20, "euler")
    assert len(full) == 21
    partial = sampling_sigmas(SCHEDULE, "normal", 10, "euler", denoise=0.5)
    assert len(partial) == 11
    assert torch.equal(partial, scheduler_sigmas(SCHEDULE, "normal", 20)[-11:])
    dpm2 = sampling_sigmas(SCHEDULE, "karras", 20, "dpm_2")
    longer = scheduler_sigmas(SCHEDULE, "karras", 21)
    assert len(dpm2) == 21 and torch.equal(dpm2, torch.cat([longer[:-2], longer[-1:]]))
    assert len(sampling_sigmas(SCHEDULE, "normal", 20, "euler", denoise=0.0)) == 0


def test_step_noise_is_a_pure_function_of_seed_and_step() -> None:
    like = torch.zeros(1, 4, 8, 8)
    assert torch.equal(step_noise(7, 3, like), step_noise(7, 3, like))
    assert not torch.equal(step_noise(7, 3, like), step_noise(7, 4, like))
    assert not torch.equal(step_noise(7, 3, like), step_noise(8, 3, like))
    assert not torch.equal(step_noise(7, 3, like, 0), step_noise(7, 3, like, 1))
    # ComfyUI's initial noise: torch.manual_seed(seed) then one randn over the batch.
    generator = torch.manual_seed(99)
    assert torch.equal(
        initial_noise(99, (2, 4, 8, 8)), torch.randn((2, 4, 8, 8), generator=generator)
    )


def test_a_new_seed_changes_noise_from_the_next_step_only() -> None:
    sigmas = sampling_sigmas(SCHEDULE, "karras", 8, "euler_ancestral")
    x = initial_noise(SEED, (1, 4, 8, 8)) * sigmas[0]
    model = MixtureDenoiser()
    a = start("euler_ancestral", sigmas, x, SEED)
    for _ in range(3):
        a = sample_step(a, model)
    b = SamplerState.from_dict(a.to_dict())
    b.seed = 4321
    a1, b1 = sample_step(a, model), sample_step(b, model)
    assert not torch.equal(a1.x, b1.x)
    assert a1.step == b1.step == 4


def test_replanning_keeps_the_steps_taken() -> None:
    sigmas = sampling_sigmas(SCHEDULE, "karras", 10, "dpmpp_2m")
    state = start("dpmpp_2m", sigmas, initial_noise(1, (1, 4, 8, 8)) * sigmas[0], 1)
    model = MixtureDenoiser()
    for _ in range(4):
        state = sample_step(state, model)
    tail = torch.linspace(float(sigmas[4]), 0.0, 11)
    longer = replan(state, tail)
    assert longer.total_steps == 14 and torch.equal(longer.sigmas[:5], sigmas[:5])
    while not longer.done:
        longer = sample_step(longer, model)
    with pytest.raises(ValueError, match="current sigma"):
        replan(state, torch.linspace(3.0, 0.0, 5))


RESUME_STEPS = 6


def resume_points(total: int) -> list[int]:
    return sorted({0, 1, total // 2, total - 1})


def test_every_sampler_and_scheduler_resumes_bit_identically_in_a_fresh_process(
    tmp_path: Path,
) -> None:
    model = MixtureDenoiser()
    expected: dict[str, torch.Tensor] = {}
    cases: list[str] = []
    for sampler in sorted(SAMPLERS):
        for scheduler in sorted(SCHEDULERS):
            sigmas = sampling_sigmas(SCHEDULE, scheduler, RESUME_STEPS, sampler)
            x = initial_noise(SEED, (1, 4, 8, 8)) * sigmas[0]
            state = start(sampler, sigmas, x, SEED)
            saved_at = set(resume_points(state.total_steps))
            while True:
                if state.step in saved_at:
                    name = f"{sampler}-{scheduler}-{state.step}"
                    encoder = Encoder()
                    # The sampler's state as a paused workflow saves it: a node in flight.
                    step = InFlightStep(state.step, encoder.encode(state.to_dict()))
                    plan = WorkflowCheckpoint(workflow={}, targets=[], in_flight={"3": step})
                    RunState("workflow", name, plan, encoder.blobs).save(tmp_path / name)
                    cases.append(name)
                if state.done:
                    break
                state = sample_step(state, model)
            for name in cases:
                if name.startswith(f"{sampler}-{scheduler}-"):
                    expected[name] = state.x
    script = (
        "import sys, json, torch\n"
        "from pathlib import Path\n"
        "from midrun.diffusion.samplers import SamplerState, sample_step\n"
        "from midrun.engine.codec import Decoder, Encoder\n"
        "from midrun.engine.runstate import RunState\n"
        "from tests.diffusion.reference import MixtureDenoiser\n"
        "root = Path(sys.argv[1]); model = MixtureDenoiser()\n"
        "for name in json.loads(sys.argv[2]):\n"
        "    saved = RunState.load(root / name)\n"
        "    saved_state = saved.plan.in_flight['3'].state\n"
        "    state = SamplerState.from_dict(Decoder(saved.blobs).decode(saved_state))\n"
        "    while not state.done:\n"
        "        state = sample_step(state, model)\n"
        "    torch.save(state.x, root / name / 'final.pt')\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(cases)],
        cwd=ROOT,
        check=True,
    )
    assert len(cases) >= len(SAMPLERS) * len(SCHEDULERS) * 3
    mismatched = [
        name
        for name in cases
        if not torch.equal(torch.load(tmp_path / name / "final.pt"), expected[name])
    ]
    assert not mismatched


def test_tensor_codec_round_trips_every_dtype_exactly() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool):
        value = (torch.randn(3, 5) * 100).to(dtype)
        encoder = Encoder()
        encoded = encoder.encode({"t": value, "empty": torch.zeros(0, 3, dtype=dtype)})
        back = Decoder(encoder.blobs).decode(json.loads(json.dumps(encoded)))
        assert back["t"].dtype == dtype and torch.equal(back["t"], value)
        assert back["empty"].shape == (0, 3)


def test_uni_pc_reuses_its_corrector_evaluation() -> None:
    """One model call per step (the corrector's call is the next step's estimate), none
    after the last step, and a final sample on the data's modes."""
    sigmas = sampling_sigmas(SCHEDULE, "karras", 12, "uni_pc")
    model = MixtureDenoiser()
    x = run_ours("uni_pc", sigmas, initial_noise(SEED, (1, 4, 8, 8)) * sigmas[0], model)
    assert model.calls == len(sigmas) - 1
    assert bool(torch.isfinite(x).all()) and float((x.abs() - 1).abs().mean()) < 0.5
