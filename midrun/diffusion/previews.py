"""Previews of the sampler's current clean estimate, decoded off the sampling thread.

Methods: ``latent2rgb`` (a 4x3 linear map per family, ~free), ``taesd`` (a TAESD-
architecture decoder, diffusers ``AutoencoderTiny``, when its weights are in
``models/vae_approx/taesd`` or ``taesdxl``), ``vae`` (the job's own VAE), ``auto`` (TAESD
if present, else the job's own VAE when it is as small as a TAESD, such as the demo
model's, else latent2rgb) and ``none``. A :class:`PreviewHook` watches the sampler's
step control points and hands due estimates to one worker thread that keeps only the
newest pending request, so a slow decoder drops previews instead of stalling steps.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from midrun.diffusion.families import Family, family
from midrun.diffusion.images import encode_preview
from midrun.engine.control import ControlPoint, Directive, Hook, Position

log = logging.getLogger(__name__)

METHODS = ("none", "auto", "latent2rgb", "taesd", "vae")
#: A VAE this small decodes previews about as cheaply as TAESD (2.4M parameters).
SMALL_VAE_PARAMETERS = 5_000_000
TAESD_FOLDERS = {"sd15": "taesd", "sdxl": "taesdxl"}


@dataclass(frozen=True, slots=True)
class PreviewSettings:
    method: str = "auto"
    every_steps: int = 1  # a preview every N steps ...
    every_ms: float = 0.0  # ... and at least this long after the previous one
    format: str = "JPEG"  # or WEBP
    max_size: int = 512

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"preview method {self.method!r}: expected one of {METHODS}")
        if self.every_steps < 1:
            raise ValueError("every_steps must be >= 1")


@dataclass(frozen=True, slots=True)
class Preview:
    run_id: str
    node_id: str
    step: int
    total_steps: int | None
    method: str
    mime: str
    data: bytes
    width: int
    height: int
    created: float


def latent_to_rgb(latent: torch.Tensor, fam: Family) -> torch.Tensor:
    """IMAGE (B, H, W, 3) at latent resolution from a scaled latent (B, 4, H, W).

    Done in numpy: on the preview thread, torch ops would start a second intra-op thread
    team that competes with the sampler's (a measurable slowdown on small CPUs)."""
    array = latent.detach().float().cpu().numpy()
    factors = np.asarray(fam.latent_rgb_factors, dtype=np.float32)
    bias = np.asarray(fam.latent_rgb_bias, dtype=np.float32)
    rgb = np.einsum("bchw,cr->bhwr", array, factors) + bias
    return torch.from_numpy(np.clip((rgb + 1.0) / 2.0, 0.0, 1.0))


class PreviewDecoder:
    """Decodes scaled latents with one method; TAESD decoders are loaded once."""

    def __init__(self, runtime: Any = None) -> None:
        self.runtime = runtime
        self._taesd: dict[str, Any] = {}

    def taesd(self, fam: Family) -> Any | None:
        if fam.name in self._taesd:
            return self._taesd[fam.name]
        decoder = None
        if self.runtime is not None:
            for folder in self.runtime.paths.folders.get("vae_approx", []):
                candidate = folder / TAESD_FOLDERS[fam.name]
                if (candidate / "config.json").is_file():
                    from diffusers import AutoencoderTiny

                    decoder = AutoencoderTiny.from_pretrained(candidate, local_files_only=True)
                    where = self.runtime.placement
                    decoder = decoder.to(where.device, where.vae_dtype).eval()
                    break
        self._taesd[fam.name] = decoder
        return decoder

    def resolve(self, method: str, fam: Family, vae: Any = None) -> str:
        """The method used: ``auto`` gives ``vae`` only when a small VAE was handed over."""
        if method == "auto":
            if self.taesd(fam) is not None:
                return "taesd"
            return "vae" if vae is not None else "latent2rgb"
        if method == "taesd" and self.taesd(fam) is None:
            log.warning("no TAESD decoder for %s in vae_approx/; using latent2rgb", fam.name)
            return "latent2rgb"
        return method

    def decode(
        self, latent: torch.Tensor, fam: Family, method: str, vae: Any = None
    ) -> torch.Tensor:
        if method == "latent2rgb":
            return latent_to_rgb(latent, fam)
        if method == "taesd":
            decoder = self.taesd(fam)
            dtype = next(decoder.parameters()).dtype
            with torch.no_grad():
                out = decoder.decode(latent.to(dtype), return_dict=False)[0]
            return ((out.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()
        if method == "vae":
            if vae is None:
                raise ValueError("preview method 'vae' needs the job's VAE")
            return vae.decode(latent / fam.scaling_factor)
        raise ValueError(f"cannot decode previews with {method!r}")


def decode_current(state: Any) -> bytes | None:
    """A PNG of a sampler state's current estimate of the final image (``denoised``,
    decoded by the checkpoint's full VAE): what an aborted generation had reached.
    None when the state is not a sampler's or its model is not bound."""
    if not isinstance(state, dict) or state.get("denoised") is None:
        return None
    live = state.get("model")
    model = getattr(live, "value", None)
    if model is None:
        return None
    from midrun.diffusion.images import png_bytes
    from midrun.diffusion.models import VAEModel

    fam = model.family
    vae = VAEModel(model.base.components.vae, fam, model.base.placement)
    with torch.no_grad():
        image = vae.decode(state["denoised"] / fam.scaling_factor)
    return png_bytes(image[0])


FLUSH_AT_NODE_END_S = 0.25  # how long a sampler's end waits for its last preview


class PreviewHook(Hook):
    """Emits :class:`Preview` objects for steppable nodes whose state has a ``denoised``
    estimate (the samplers), through ``on_preview`` on a worker thread."""

    def __init__(
        self,
        on_preview: Callable[[Preview], None],
        settings: PreviewSettings | None = None,
        runtime: Any = None,
    ) -> None:
        self.on_preview = on_preview
        self.settings = settings or PreviewSettings()
        self.decoder = PreviewDecoder(runtime)
        self._last: float = 0.0
        self._pending: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._vae_sizes: dict[int, int] = {}
        self._previewing: set[str] = set()  # nodes with previews submitted, not delivered
        self.dropped = 0

    def due(self, step: int) -> bool:
        s = self.settings
        if s.method == "none" or step % s.every_steps:
            return False
        return (time.perf_counter() - self._last) * 1000.0 >= s.every_ms

    async def on_point(self, point: ControlPoint) -> Directive | None:
        if point.position == Position.AFTER and point.node_id in self._previewing:
            # The node's last previews are delivered before it is done (ComfyUI sends them
            # inside the step), waiting for a slow decoder only so long: a preview that
            # comes after the next node started is dropped by the server.
            self._previewing.discard(point.node_id)
            await asyncio.to_thread(self.flush, FLUSH_AT_NODE_END_S)
            return None
        if point.position != Position.STEP or not isinstance(point.step_state, dict):
            return None
        state = point.step_state
        latent = state.get("denoised")
        if latent is None or point.step is None or not self.due(point.step):
            return None
        self._last = time.perf_counter()
        model = state["model"].value
        # The live model's family carries its own latent scale and RGB factors (the demo
        # model's differ from stock SD1.5's); a detached state falls back to the stock one.
        fam = model.family if model is not None else family(state["model_desc"]["family"])
        vae = None
        own = model.base.components.vae if model is not None else None
        if own is not None and self._decodes_with_vae(own):  # a UNet-only model has none
            from midrun.diffusion.models import VAEModel

            vae = VAEModel(own, fam, model.base.placement)
        ready = None
        if latent.is_cuda:  # the worker decodes on a side stream once this step's work is done
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(latent.device))  # its device, not cuda:0
        request = (
            point.run_id, point.node_id, point.step, point.total_steps, latent, fam, vae, ready
        )  # fmt: skip
        self._previewing.add(point.node_id)
        self._submit(request)
        return None

    def _decodes_with_vae(self, module: Any) -> bool:
        if self.settings.method == "vae":
            return True
        if self.settings.method != "auto":
            return False
        count = self._vae_sizes.get(id(module))
        if count is None:
            count = self._vae_sizes[id(module)] = sum(p.numel() for p in module.parameters())
        return count <= SMALL_VAE_PARAMETERS

    def _submit(self, request: tuple[Any, ...]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="midrun-previews", daemon=True)
            self._thread.start()
        try:
            self._pending.put_nowait(request)
        except queue.Full:  # the decoder is behind: replace the waiting request
            try:
                self._pending.get_nowait()
                self._pending.task_done()
                self.dropped += 1
            except queue.Empty:
                pass
            self._pending.put_nowait(request)

    def _work(self) -> None:
        while True:
            request = self._pending.get()
            if request is None:
                return
            run_id, node_id, step, total, latent, fam, vae, ready = request
            try:
                method = self.decoder.resolve(self.settings.method, fam, vae)
                if ready is not None:
                    image = self._decode_on_side_stream(latent, fam, method, vae, ready)
                else:
                    image = self.decoder.decode(latent, fam, method, vae)[0]
                data = encode_preview(image, self.settings.format, self.settings.max_size)
                mime = "image/webp" if self.settings.format.upper() == "WEBP" else "image/jpeg"
                h, w = image.shape[0], image.shape[1]
                self.on_preview(
                    Preview(run_id, node_id, step, total, method, mime, data, w, h, time.time())
                )
            except Exception:
                log.exception("preview of step %s failed", step)
            finally:
                self._pending.task_done()

    def _decode_on_side_stream(
        self, latent: torch.Tensor, fam: Family, method: str, vae: Any, ready: Any
    ) -> torch.Tensor:
        """On CUDA the decode runs on its own stream, so sampling kernels never queue
        behind it; it starts when the step that produced ``latent`` has finished."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=latent.device)
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            latent.record_stream(self._stream)
            return self.decoder.decode(latent, fam, method, vae)[0]

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every submitted preview has been delivered (or ``timeout``)."""
        if self._thread is not None and self._thread.is_alive():
            pending = self._pending
            with pending.all_tasks_done:
                pending.all_tasks_done.wait_for(lambda: not pending.unfinished_tasks, timeout)

    def close(self) -> None:
        self.flush()
        if self._thread is not None and self._thread.is_alive():
            self._pending.put(None)
            self._thread.join(timeout=5)
