"""KSampler and KSamplerAdvanced as steppable nodes.

ComfyUI's semantics: the LATENT is unscaled, the sampler works on ``latent * scale``;
``denoise < 1`` walks the last ``steps`` sigmas of a ``steps / denoise`` schedule; the
advanced node cuts the schedule to ``[start_at_step, end_at_step]``, may skip the noise,
and unless ``return_with_leftover_noise`` ends at sigma 0. The first noise is
``initial_noise(seed)``, scaled by ``sqrt(1 + sigma^2)`` when sampling starts at the top
of the schedule.

The step state is a plain dict; the model is its only :class:`Live` part. Hot inputs
(conditioning, cfg, model, seed, steps, denoise, end_at_step) can change between two
steps through :meth:`swap`; a resumed state takes them from its new inputs through
:meth:`resume`. Any other input that changed is refused, naming the input.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from midrun.core.errors import InputNotHotSwappable
from midrun.diffusion import samplers
from midrun.diffusion.guidance import Guidance
from midrun.diffusion.models import DiffusionModel
from midrun.diffusion.noise import initial_noise
from midrun.diffusion.schedulers import sampling_sigmas
from midrun.engine.codec import Live


def latent_digest(samples: torch.Tensor) -> str:
    data = samples.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    return f"{tuple(samples.shape)}:{samples.dtype}:{digest}"


def _latents_to(value: Any, shape: torch.Size, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device) if value.shape == shape else value
    if isinstance(value, dict):
        return {k: _latents_to(v, shape, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_latents_to(v, shape, device) for v in value)
    return value


class KSamplerStep:
    """Steppable implementation shared by both sampler nodes (``advanced`` picks which)."""

    def __init__(self, advanced: bool = False) -> None:
        self.advanced = advanced
        self.seed_input = "noise_seed" if advanced else "seed"
        fixed = ["sampler_name", "scheduler", "latent_image"]
        if advanced:
            fixed += ["add_noise", "start_at_step", "return_with_leftover_noise"]
        self.fixed = tuple(fixed)

    # -- the protocol ---------------------------------------------------------------

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        model: DiffusionModel = inputs["model"]
        latent: dict[str, Any] = inputs["latent_image"]
        samples = latent["samples"].float()
        if samples.shape[1] != model.family.latent_channels:
            raise ValueError(
                f"latent_image has {samples.shape[1]} channels; this model "
                f"({model.family.name}) needs {model.family.latent_channels}"
            )
        seed = int(inputs[self.seed_input])
        params = self._params(inputs)
        sigmas = self._sigmas(model, params)
        device = model.base.placement.device
        scale = model.family.scaling_factor
        x0 = samples.to(device) * scale
        if params["add_noise"] and len(sigmas) > 1:
            noise = initial_noise(seed, samples.shape).to(device)
            sigma_max = model.schedule.sigma_max
            first = float(sigmas[0])
            top = math.isclose(first, sigma_max, rel_tol=1e-5) or first > sigma_max
            x = x0 + noise * (math.sqrt(1.0 + first**2) if top else first)
        else:
            x = x0
        sampler = samplers.start(inputs["sampler_name"], sigmas, x, seed)
        return {
            "sampler": sampler.to_dict(),
            "model": Live(model),
            "model_desc": model.describe(),
            "positive": inputs["positive"],
            "negative": inputs["negative"],
            "cfg": float(inputs["cfg"]),
            "params": params,
            "fixed": {name: self._fixed_value(name, inputs) for name in self.fixed},
            "latent": {k: v for k, v in latent.items() if k != "samples"},
            "input_samples": samples.cpu() if len(sigmas) <= 1 else None,
            "image_size": [samples.shape[2] * 8, samples.shape[3] * 8],
            "scale": scale,
            "denoised": None,
        }

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        model = state["model"].value
        if model is None:
            raise RuntimeError("the sampler state was restored without its model; resume it")
        guide = Guidance(
            model, state["positive"], state["negative"], state["cfg"], tuple(state["image_size"])
        )
        seen: list[torch.Tensor] = []

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            out = guide(x, sigma)
            seen.append(out)
            return out

        current = samplers.SamplerState.from_dict(state["sampler"])
        advanced = samplers.sample_step(current, denoise)
        return {**state, "sampler": advanced.to_dict(), "denoised": seen[-1] if seen else None}

    def done(self, state: dict[str, Any]) -> bool:
        sigmas = state["sampler"]["sigmas"]
        return int(state["sampler"]["step"]) >= max(len(sigmas) - 1, 0)

    def total_steps(self, state: dict[str, Any]) -> int:
        return max(len(state["sampler"]["sigmas"]) - 1, 0)

    def finish(self, state: dict[str, Any]) -> tuple[dict[str, Any]]:
        if state["input_samples"] is not None:  # nothing to sample: ComfyUI returns the input
            return ({**state["latent"], "samples": state["input_samples"]},)
        samples = state["sampler"]["x"].float() / state["scale"]
        return ({**state["latent"], "samples": samples.cpu()},)

    def resume(self, state: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """Bind the model again and take any changed hot inputs."""
        model: DiffusionModel = inputs["model"]
        device = model.base.placement.device
        sampler = dict(state["sampler"])
        shape = sampler["x"].shape
        # Latent-shaped tensors (x and a multistep sampler's remembered estimates) go back
        # to the device; the remembered sigmas stay on the CPU, where the steps keep them.
        sampler["x"] = sampler["x"].to(device)
        sampler["memory"] = _latents_to(sampler["memory"], shape, device)
        denoised = state["denoised"]
        if denoised is not None:
            denoised = denoised.to(device)
        state = {**state, "sampler": sampler, "model": Live(model), "denoised": denoised}
        return self.swap(state, inputs)

    # -- hot swapping ---------------------------------------------------------------

    def swap(self, state: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """A state that uses ``changes`` from the next step on; refuses non-hot changes."""
        for name in self.fixed:
            if name in changes and self._fixed_value(name, changes) != state["fixed"][name]:
                raise InputNotHotSwappable(name, self._why(name))
        state = dict(state)
        if "model" in changes:
            model: DiffusionModel = changes["model"]
            if model.family.name != state["model_desc"]["family"]:
                raise InputNotHotSwappable(
                    "model",
                    f"the new model is {model.family.name}, the latent was made for "
                    f"{state['model_desc']['family']}",
                )
            state["model"] = Live(model)
            state["model_desc"] = model.describe()
        for name in ("positive", "negative"):
            if name in changes:
                state[name] = changes[name]
        if "cfg" in changes:
            state["cfg"] = float(changes["cfg"])
        sampler = dict(state["sampler"])
        if self.seed_input in changes:
            sampler["seed"] = int(changes[self.seed_input])
        params = dict(state["params"])
        replan = False
        for name in ("steps", "denoise", "end_at_step"):
            if name in changes and name in params and changes[name] != params[name]:
                params[name] = changes[name]
                replan = True
        state["sampler"] = sampler
        state["params"] = params
        if replan:
            state = self._replan(state)
        return state

    def _replan(self, state: dict[str, Any]) -> dict[str, Any]:
        """Keep the steps taken; walk the new schedule's sigmas below the current one."""
        model: DiffusionModel = state["model"].value
        current = samplers.SamplerState.from_dict(state["sampler"])
        if current.done and float(current.sigmas[-1]) == 0.0:
            raise InputNotHotSwappable("steps", "the sampler has already finished")
        sigma = float(current.sigmas[current.step])
        new = self._sigmas(model, state["params"])
        below = new[new < sigma * (1 - 1e-5)]
        remaining = torch.cat([torch.tensor([sigma]), below.float()])
        replanned = samplers.replan(current, remaining)
        return {**state, "sampler": replanned.to_dict()}

    # -- helpers --------------------------------------------------------------------

    def _params(self, inputs: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "steps": int(inputs["steps"]),
            "scheduler": inputs["scheduler"],
            "sampler_name": inputs["sampler_name"],
        }
        if self.advanced:
            params.update(
                add_noise=inputs["add_noise"] == "enable",
                start_at_step=int(inputs["start_at_step"]),
                end_at_step=int(inputs["end_at_step"]),
                force_full_denoise=inputs["return_with_leftover_noise"] != "enable",
            )
        else:
            params.update(denoise=float(inputs["denoise"]), add_noise=True)
        return params

    def _sigmas(self, model: DiffusionModel, params: dict[str, Any]) -> torch.Tensor:
        sigmas = sampling_sigmas(
            model.schedule,
            params["scheduler"],
            params["steps"],
            params["sampler_name"],
            params.get("denoise", 1.0),
        )
        if not self.advanced:
            return sigmas
        end, start = params["end_at_step"], params["start_at_step"]
        if end < len(sigmas) - 1:
            sigmas = sigmas[: end + 1].clone()
            if params["force_full_denoise"]:
                sigmas[-1] = 0
        if start < len(sigmas) - 1:
            return sigmas[start:]
        return torch.zeros(0)

    def _fixed_value(self, name: str, inputs: dict[str, Any]) -> Any:
        value = inputs[name]
        if name == "latent_image":
            return latent_digest(value["samples"])
        return value

    @staticmethod
    def _why(name: str) -> str:
        if name == "latent_image":
            return "the latent being denoised is the sampler's own state; start a new job"
        return (
            "the sampler's state was built for the old value; pause, then edit and re-run "
            "the sampler from the start"
        )
