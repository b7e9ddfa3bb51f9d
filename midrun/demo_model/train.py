"""Trains midrun's demo model: a small latent diffusion model of coloured shapes.

Same structure as Stable Diffusion 1.5, scaled down: an AutoencoderKL (64x64 RGB <-> 8x8x4
latents), a CLIP-architecture text encoder using CLIP's own tokenizer, and a
UNet2DConditionModel with cross-attention, trained with SD1.5's noise schedule
(eps-prediction, scaled-linear betas) and 10 % caption dropout for classifier-free
guidance. Stages: render the dataset, train the VAE, encode the dataset and fix the latent
scale, train the text encoder and UNet together (EMA weights kept), fine-tune the VAE
decoder with the encoder frozen (sharper colours; the latent space does not move), fit
the latent-to-RGB preview factors, save a diffusers folder (fp16 safetensors) with a
model card.

    python -m midrun.demo_model.train --out midrun/demo_model/weights
    python -m midrun.demo_model.train --finetune-decoder FOLDER   # the last stage alone
    python -m midrun.demo_model.train --continue-unet FOLDER --unet-steps 4000 --unet-lr 2e-4
                                      # more UNet + text encoder training on a saved folder
    python -m midrun.demo_model.train --vae-from FOLDER --out OUT
                                      # a new UNet + text encoder on a saved folder's VAE

Everything is seeded; the card records the command, seed, hardware, time and metrics.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from midrun.demo_model import shapes
from midrun.diffusion.families import SD15
from midrun.diffusion.models import token_windows
from midrun.diffusion.schedule import DiscreteSchedule


@dataclass(frozen=True)
class Config:
    images: int = 24000
    vae_steps: int = 3000
    vae_batch: int = 8
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 10000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    ema: float = 0.999
    decoder_steps: int = 3000  # the last stage: decoder fine-tune, encoder frozen
    decoder_batch: int = 16
    decoder_lr: float = 5e-4
    caption_dropout: float = 0.1
    tilt: float = shapes.TILT  # degrees either side of upright (shapes.ANY_ANGLE: any)
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    text_width: int = 64
    text_layers: int = 2
    groups: int = 16
    seed: int = 0
    log_every: int = 100
    snapshot_every: int = 0


def vae_model(c: Config) -> Any:
    from diffusers import AutoencoderKL

    levels = len(c.vae_channels)
    return AutoencoderKL(
        block_out_channels=c.vae_channels,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        norm_num_groups=c.groups,
        sample_size=shapes.SIZE,
    )


def text_model(c: Config) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            hidden_size=c.text_width,
            intermediate_size=c.text_width * 4,
            num_hidden_layers=c.text_layers,
            num_attention_heads=max(1, c.text_width // 32),
            max_position_embeddings=77,
            vocab_size=49408,
            hidden_act="quick_gelu",
            projection_dim=c.text_width,
        )
    )


def unet_model(c: Config) -> Any:
    from diffusers import UNet2DConditionModel

    levels = len(c.unet_channels)
    return UNet2DConditionModel(
        sample_size=shapes.SIZE // 2 ** (len(c.vae_channels) - 1),
        in_channels=4,
        out_channels=4,
        block_out_channels=c.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        cross_attention_dim=c.text_width,
        attention_head_dim=8,
        norm_num_groups=c.groups,
    )


def render_dataset(c: Config) -> tuple[torch.Tensor, list[str]]:
    """``(images (N, 3, 64, 64) in -1..1, captions)`` over the training triples."""
    specs = list(shapes.specs(c.seed, c.images, tilt=c.tilt))
    pixels = np.stack([np.asarray(shapes.render(s)) for s in specs])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images, [s.caption for s in specs]


def _lr(step: int, total: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def train_vae(c: Config, images: torch.Tensor, log: Any) -> tuple[Any, dict[str, float]]:
    vae = vae_model(c).train()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=c.vae_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(c.seed + 1)
    recent: list[float] = []
    for step in range(c.vae_steps):
        for group in optimiser.param_groups:
            group["lr"] = _lr(step, c.vae_steps, c.vae_lr)
        batch = images[torch.randint(len(images), (c.vae_batch,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latent = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=generator
        )
        recon = vae.decode(latent).sample
        rec = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch)
        loss = rec + c.kl_weight * posterior.kl().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        recent.append(float(rec.detach()))
        if (step + 1) % c.log_every == 0:
            log(f"vae {step + 1}/{c.vae_steps} recon {np.mean(recent[-c.log_every :]):.5f}")
    return vae.eval().requires_grad_(False), {"vae_recon_loss": float(np.mean(recent[-200:]))}


def finetune_decoder(
    vae: Any, images: torch.Tensor, steps: int, batch: int, lr: float, seed: int, log: Any
) -> dict[str, float]:
    """Train the VAE's decoder further with the encoder frozen: the latent space (and so
    the UNet trained on it) stays valid while decoded colours and edges sharpen (the
    move SD's own fine-tuned VAE decoders made)."""
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    vae.train()
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    recent: list[float] = []
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = _lr(step, steps, lr, warmup=50)
        batch_images = images[torch.randint(len(images), (batch,), generator=generator)]
        with torch.no_grad():
            posterior = vae.encode(batch_images).latent_dist
            latent = posterior.mean + posterior.std * torch.randn(
                posterior.mean.shape, generator=generator
            )
        recon = vae.decode(latent).sample
        loss = F.mse_loss(recon, batch_images) + 0.5 * F.l1_loss(recon, batch_images)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        recent.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            log(f"decoder {step + 1}/{steps} recon {np.mean(recent[-100:]):.5f}")
    vae.eval().requires_grad_(False)
    return {"decoder_recon_loss": float(np.mean(recent[-200:]))}


@torch.no_grad()
def encode_dataset(vae: Any, images: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)]
    )


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
    """Least-squares 4x3 map (plus bias) from a latent cell to its pixels' mean colour
    (in -1..1, the convention of the preview code)."""
    factor = images.shape[-1] // latents.shape[-1]
    target = F.avg_pool2d(images, factor)  # (N, 3, h, w)
    x = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(design.double(), y.double()).solution.float()
    return {"factors": solution[:4].tolist(), "bias": solution[4].tolist()}


def train_unet(
    c: Config,
    latents: torch.Tensor,
    captions: list[str],
    log: Any,
    snapshot: Any = None,
    start: tuple[Any, Any] | None = None,
    seed_offset: int = 0,
) -> tuple[Any, Any, dict[str, float]]:
    """Trains from fresh weights, or from ``start`` (a saved UNet and text encoder) with
    the draws of ``seed + seed_offset`` so a continued run does not replay the first."""
    unet, text = start if start else (unet_model(c), text_model(c))
    unet, text = (m.float().train().requires_grad_(True) for m in (unet, text))
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    params = [*unet.parameters(), *text.parameters()]
    optimiser = torch.optim.AdamW(params, lr=c.unet_lr, weight_decay=0.01)
    schedule = DiscreteSchedule()
    betas_sigmas = schedule.sigmas  # ascending, index = timestep
    alphas = 1.0 / (1.0 + betas_sigmas**2)  # alpha_bar_t
    unique = sorted(set(captions))
    token_rows = {cap: token_windows(cap)[0] for cap in [*unique, ""]}
    generator = torch.Generator().manual_seed(c.seed + 2 + seed_offset)
    rng = random.Random(c.seed + 3 + seed_offset)
    recent: list[float] = []
    for step in range(c.unet_steps):
        for group in optimiser.param_groups:
            group["lr"] = _lr(step, c.unet_steps, c.unet_lr)
        index = torch.randint(len(latents), (c.unet_batch,), generator=generator)
        x0 = latents[index]
        texts = ["" if rng.random() < c.caption_dropout else captions[i] for i in index.tolist()]
        ids = torch.stack([token_rows[t] for t in texts])
        t = torch.randint(0, 1000, (c.unet_batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        context = text(input_ids=ids).last_hidden_state
        prediction = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(prediction, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        decay = c.ema if start else min(c.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text)):
                for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
        recent.append(float(loss.detach()))
        if (step + 1) % c.log_every == 0:
            log(f"unet {step + 1}/{c.unet_steps} loss {np.mean(recent[-c.log_every :]):.5f}")
        if snapshot and c.snapshot_every and (step + 1) % c.snapshot_every == 0:
            snapshot(step + 1, ema_unet, ema_text, float(np.mean(recent[-500:])))
    metrics = {"unet_loss": float(np.mean(recent[-500:]))}
    return ema_unet.requires_grad_(False), ema_text.requires_grad_(False), metrics


def save_folder(
    out: Path, vae: Any, text: Any, unet: Any, scale: float, rgb: dict[str, Any]
) -> None:
    from midrun.diffusion.tokenizer import write_tokenizer_files

    if out.exists():
        shutil.rmtree(out)
    vae.register_to_config(scaling_factor=scale)
    for name, module in (("vae", vae), ("text_encoder", text), ("unet", unet)):
        # A copy, so that rounding to fp16 never touches weights still being trained.
        half = copy.deepcopy(module).to(torch.float16)
        half.save_pretrained(out / name, safe_serialization=True)
    (out / "scheduler").mkdir(parents=True)
    shutil.copy(SD15.config_dir / "scheduler.json", out / "scheduler" / "scheduler_config.json")
    shutil.copy(SD15.config_dir / "model_index.json", out / "model_index.json")
    write_tokenizer_files(out / "tokenizer")
    (out / "latent_rgb.json").write_text(json.dumps(rgb, indent=1), "utf-8")


def folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def command_line(module: str = "midrun.demo_model.train", argv: list[str] | None = None) -> str:
    """How this run was started (``argv``: its arguments, this process's by default)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([Path(sys.executable).name, "-m", module, *args])


def _hardware() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_card(
    out: Path, c: Config, metrics: dict[str, Any], seconds: float,
    stages: list[dict[str, Any]] | None = None,
) -> None:  # fmt: skip
    """``card.json`` and ``MODEL_CARD.md``. ``stages`` lists every command that made the
    weights (a run, then any later stage such as a decoder fine-tune), with its time."""
    stages = stages or [{"command": command_line(), "seconds": round(seconds, 1)}]
    card = {
        "command": stages[0]["command"],
        "stages": stages,
        "config": asdict(c),
        "hardware": _hardware(),
        "software": {"python": platform.python_version(), "torch": torch.__version__},
        "seconds": round(sum(st["seconds"] for st in stages), 1),
        "metrics": metrics,
        "bytes": folder_bytes(out),
    }
    (out / "card.json").write_text(json.dumps(card, indent=1), "utf-8")
    lines = [
        "# midrun demo model",
        "",
        "A small latent diffusion model (AutoencoderKL, CLIP-architecture text encoder,",
        "UNet2DConditionModel) trained by midrun's own script on procedurally drawn coloured",
        "shapes (midrun/demo_model/shapes.py). Not a general image model.",
        "",
        *[
            f"- stage {i + 1}: `{st['command']}` ({st['seconds'] / 60:.1f} min)"
            for i, st in enumerate(stages)
        ],
        *(["- each stage took the folder the stage before it wrote"] if len(stages) > 1 else []),
        f"- seed: {c.seed}",
        f"- hardware: {card['hardware']}",
        f"- training time: {card['seconds'] / 60:.1f} min",
        f"- metrics: {json.dumps(metrics)}",
        f"- size: {card['bytes'] / 1e6:.1f} MB (fp16 safetensors)",
        "",
    ]
    (out / "MODEL_CARD.md").write_text("\n".join(lines), "utf-8")


def _card_config(card: dict[str, Any], c: Config, fields: tuple[str, ...]) -> Config:
    """The config a card records, with ``fields`` taken from ``c`` (a later stage's)."""
    saved = {k: tuple(v) if isinstance(v, list) else v
             for k, v in card["config"].items() if k in Config.__dataclass_fields__}  # fmt: skip
    saved.setdefault("tilt", shapes.ANY_ANGLE)  # cards from before the field drew any angle
    return Config(**{**saved, **{f: getattr(c, f) for f in fields}})


def _add_stage(folder: Path, card: dict[str, Any], config: Config, metrics: dict[str, Any],
               seconds: float) -> None:  # fmt: skip
    stages = card.get("stages") or [{"command": card["command"], "seconds": card["seconds"]}]
    stages.append({"command": command_line(), "seconds": round(seconds, 1)})
    write_card(folder, config, {**card["metrics"], **metrics}, 0.0, stages)


def continue_folder(folder: Path, c: Config, log: Any = print) -> dict[str, Any]:
    """More UNet + text encoder training on a saved folder, from its weights, with
    ``c.unet_steps``, ``c.unet_lr`` and ``c.unet_batch``; the VAE and latent scale are kept.
    Recorded in its card as a further stage."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    started = time.perf_counter()
    card = json.loads((folder / "card.json").read_text("utf-8"))
    config = _card_config(
        card, c, ("unet_steps", "unet_lr", "unet_batch", "ema", "log_every", "snapshot_every")
    )
    torch.manual_seed(config.seed)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True).float().eval()
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    images, captions = render_dataset(config)
    with torch.no_grad():
        latents = encode_dataset(vae, images) * float(vae.config.scaling_factor)

    def save(where: Path, unet: Any, text: Any) -> None:
        for name, module in (("text_encoder", text), ("unet", unet)):
            half = copy.deepcopy(module).to(torch.float16)
            half.save_pretrained(where / name, safe_serialization=True)

    def snapshot(step: int, unet: Any, text: Any, loss: float) -> None:
        where = folder.with_name(f"{folder.name}-snapshot")
        shutil.rmtree(where, ignore_errors=True)
        shutil.copytree(folder, where)
        save(where, unet, text)
        log(f"snapshot at unet step {step} (loss {loss:.5f}): {where}")

    done = sum(1 for st in card.get("stages", []) if "--continue-unet" in st["command"])
    unet, text, metrics = train_unet(config, latents, captions, log, snapshot,
                                     start=(unet, text), seed_offset=100 * (done + 1))  # fmt: skip
    save(folder, unet, text)
    total = card["metrics"].get("unet_steps_total", card["config"]["unet_steps"]) + c.unet_steps
    metrics["unet_steps_total"] = total
    seconds = time.perf_counter() - started
    _add_stage(folder, card, _card_config(card, c, ()), metrics, seconds)
    log(f"UNet trained {c.unet_steps} more steps ({total} in all) in {seconds / 60:.1f} min: "
        f"{metrics}")  # fmt: skip
    return metrics


def finetune_folder(folder: Path, c: Config, log: Any = print) -> dict[str, Any]:
    """The decoder stage on an already trained folder (what ``train`` does last when
    ``decoder_steps`` > 0), recorded in its card as a further stage."""
    from diffusers import AutoencoderKL

    started = time.perf_counter()
    torch.manual_seed(c.seed)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True).float().eval()
    images, _ = render_dataset(c)
    metrics = finetune_decoder(vae, images, c.decoder_steps, c.decoder_batch, c.decoder_lr,
                               c.seed + 4, log)  # fmt: skip
    vae.to(torch.float16).save_pretrained(folder / "vae", safe_serialization=True)
    card = json.loads((folder / "card.json").read_text("utf-8"))
    config = _card_config(card, c, ("decoder_steps", "decoder_batch", "decoder_lr"))
    seconds = time.perf_counter() - started
    _add_stage(folder, card, config, metrics, seconds)
    log(f"decoder fine-tuned in {seconds / 60:.1f} min: {metrics}")
    return metrics


def load_vae(folder: Path) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """A trained folder's VAE, the VAE metrics its card records and the stages that made
    it (a fresh UNet can be trained on it with ``train(..., vae_from=folder)``)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    card = json.loads((folder / "card.json").read_text("utf-8"))
    stages = card.get("stages") or [{"command": card["command"], "seconds": card["seconds"]}]
    if "tilt" not in card["config"]:  # made before the option, on shapes at any angle
        stages = [{**st, "command": f"{st['command']} --tilt {shapes.ANY_ANGLE:g}"}
                  for st in stages]  # fmt: skip
    metrics = {k: v for k, v in card["metrics"].items() if k.startswith(("vae_", "decoder_"))}
    return vae.float().eval().requires_grad_(False), metrics, stages


def train(c: Config, out: Path, log: Any = print, vae_from: Path | None = None) -> dict[str, Any]:
    """The whole model; with ``vae_from``, that folder's trained VAE (decoder fine-tune
    included) is kept and only the text encoder and UNet are trained, from scratch."""
    started = time.perf_counter()
    torch.manual_seed(c.seed)
    images, captions = render_dataset(c)
    log(f"dataset: {len(images)} images, {len(set(captions))} captions")
    earlier: list[dict[str, Any]] = []
    if vae_from:
        vae, metrics, earlier = load_vae(vae_from)
        log(f"VAE from {vae_from}")
    else:
        vae, metrics = train_vae(c, images, log)
    latents = encode_dataset(vae, images)
    scale = float(1.0 / latents.std())
    rgb = fit_latent_rgb(latents * scale, images)
    log(f"latent scale {scale:.4f}")

    def snapshot(step: int, unet: Any, text: Any, loss: float) -> None:
        # Periodic EMA snapshots beside the output, so a long run can be judged early.
        where = out.with_name(f"{out.name}-snapshot")
        save_folder(where, vae, text, unet, scale, rgb)
        partial = {**metrics, "unet_loss": loss, "unet_steps_done": step}
        write_card(where, c, partial, time.perf_counter() - started)
        log(f"snapshot at unet step {step}: {where}")

    unet, text, unet_metrics = train_unet(c, latents * scale, captions, log, snapshot)
    metrics.update(unet_metrics, latent_scale=scale)
    if c.decoder_steps and not vae_from:
        metrics.update(finetune_decoder(vae, images, c.decoder_steps, c.decoder_batch,
                                        c.decoder_lr, c.seed + 4, log))  # fmt: skip
    save_folder(out, vae, text, unet, scale, rgb)
    seconds = time.perf_counter() - started
    stages = [*earlier, {"command": command_line(), "seconds": round(seconds, 1)}]
    write_card(out, c, metrics, seconds, stages)
    log(f"saved {out} ({folder_bytes(out) / 1e6:.1f} MB) in {seconds / 60:.1f} min")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "weights"))
    parser.add_argument("--finetune-decoder", metavar="FOLDER", default=None,
                        help="run only the decoder stage on a trained folder")  # fmt: skip
    parser.add_argument("--continue-unet", metavar="FOLDER", default=None,
                        help="train a saved folder's UNet and text encoder further")  # fmt: skip
    parser.add_argument("--vae-from", metavar="FOLDER", default=None,
                        help="train a new UNet and text encoder on a trained VAE")  # fmt: skip
    for field, default in asdict(Config()).items():
        if isinstance(default, tuple):
            continue
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    # A folder a stage starts from must hold what it reads: refused here, before any work.
    reads = {"continue_unet": ("vae", "unet", "text_encoder"), "finetune_decoder": ("vae",),
             "vae_from": ("vae",)}  # fmt: skip
    for option, models in reads.items():
        folder = getattr(args, option)
        missing = [need for need in [*(f"{m}/config.json" for m in models), "card.json"]
                   if folder and not (Path(folder) / need).is_file()]  # fmt: skip
        if missing:
            parser.error(f"--{option.replace('_', '-')} {folder} is not a trained demo model "
                         f"folder: it has no {', '.join(missing)}")  # fmt: skip
    stages = ("out", "finetune_decoder", "continue_unet", "vae_from")
    values = {k: v for k, v in vars(args).items() if k not in stages}
    config = Config(**values)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:6.1f} min] {message}", flush=True)

    if args.continue_unet:
        continue_folder(Path(args.continue_unet), config, log)
    elif args.finetune_decoder:
        finetune_folder(Path(args.finetune_decoder), config, log)
    else:
        train(config, Path(args.out), log, Path(args.vae_from) if args.vae_from else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
