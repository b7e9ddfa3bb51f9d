"""Tiny random models in the real layouts, so loading code runs offline in seconds.

``tiny_models(family)`` builds small diffusers / transformers modules with seeded random
weights; ``write_single_file`` stores them as an original-layout (LDM) checkpoint exactly
as Stability's and ComfyUI's files are laid out, ``write_diffusers_folder`` as a diffusers
pipeline folder, and ``write_lora`` writes LoRA files in kohya, ComfyUI and diffusers
(PEFT) key styles. Test suites and benchmarks use them; users never need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from midrun.diffusion import ldm_keys
from midrun.diffusion.checkpoints import (
    SD15_CLIP,
    SDXL_CLIP_G,
    SDXL_CLIP_L,
    UNET,
    VAE,
    text_module_name,
)
from midrun.diffusion.families import SD15, SDXL, Family

LoraStyle = Literal["kohya", "comfy", "diffusers"]

TINY_UNET: dict[str, dict[str, Any]] = {
    "sd15": {
        "sample_size": 8,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    },
    "sdxl": {
        "sample_size": 8,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2],
        "cross_attention_dim": 64,
        "attention_head_dim": [1, 1],
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + 32,
        "norm_num_groups": 32,
    },
}
TINY_VAE = {
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "projection_dim": 32,
}


@dataclass(eq=False)
class TinyModels:
    family: Family
    unet: Any
    vae: Any
    text_encoders: list[Any]


def _config(family: Family, component: str, tiny: dict[str, Any]) -> dict[str, Any]:
    data = json.loads((family.config_dir / f"{component}.json").read_text("utf-8"))
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    data.update(tiny)
    return data


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Seeded weights of a sensible scale (default inits draw from the global RNG)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("weight") and param.ndim == 1:  # a norm's gain
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                fan_in = param[0].numel() if param.ndim > 1 else param.numel()
                param.copy_(torch.randn(param.shape, generator=generator) / max(fan_in, 1) ** 0.5)


def tiny_models(family: Family = SD15, seed: int = 0) -> TinyModels:
    """Small random modules with the family's structure."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    generator = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel.from_config(_config(family, "unet", TINY_UNET[family.name]))
    vae = AutoencoderKL.from_config(_config(family, "vae", TINY_VAE))
    encoders: list[Any] = [
        CLIPTextModel(CLIPTextConfig(**_config(family, "text_encoder", TINY_CLIP)))
    ]
    if family is SDXL:
        config = CLIPTextConfig(**_config(family, "text_encoder_2", TINY_CLIP))
        encoders.append(CLIPTextModelWithProjection(config))
    for module in (unet, vae, *encoders):
        _randomise(module, generator)
        module.eval().requires_grad_(False)
    return TinyModels(family, unet, vae, encoders)


def to_ldm(models: TinyModels) -> dict[str, torch.Tensor]:
    """The modules' weights under the original single-file names."""
    state: dict[str, torch.Tensor] = {}
    unet_map = ldm_keys.unet_module_map(models.unet.config)
    for key, value in models.unet.state_dict().items():
        state[UNET + _renamed(key, unet_map)] = value
    vae_map = ldm_keys.vae_module_map(models.vae.config)
    for key, value in models.vae.state_dict().items():
        name = _renamed(key, vae_map)
        if ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        state[VAE + name] = value
    first = models.text_encoders[0].state_dict()
    prefix = SD15_CLIP if models.family is SD15 else SDXL_CLIP_L
    state.update(
        {prefix + text_module_name(k): v for k, v in first.items() if "position_ids" not in k}
    )
    if models.family is SDXL:
        second = models.text_encoders[1].state_dict()
        state.update(_open_clip({text_module_name(k): v for k, v in second.items()}, SDXL_CLIP_G))
    return {k: v.contiguous() for k, v in state.items()}


def _renamed(key: str, module_map: dict[str, str]) -> str:
    name = ldm_keys.rename(key, module_map)
    if name is None:
        raise KeyError(f"no original-layout name for {key}")
    return name


def _open_clip(hf: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A Hugging Face CLIPTextModelWithProjection state in OpenCLIP's layout."""
    out = {
        prefix + "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        prefix + "text_projection": hf["text_projection.weight"].T.contiguous(),
    }
    layers = 0
    while f"text_model.encoder.layers.{layers}.layer_norm1.weight" in hf:
        layers += 1
    for i in range(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{part}"] = torch.cat(
                [hf[f"{src}self_attn.{p}_proj.{part}"] for p in "qkv"]
            )
            out[f"{dst}attn.out_proj.{part}"] = hf[f"{src}self_attn.out_proj.{part}"]
            out[f"{dst}ln_1.{part}"] = hf[f"{src}layer_norm1.{part}"]
            out[f"{dst}ln_2.{part}"] = hf[f"{src}layer_norm2.{part}"]
            out[f"{dst}mlp.c_fc.{part}"] = hf[f"{src}mlp.fc1.{part}"]
            out[f"{dst}mlp.c_proj.{part}"] = hf[f"{src}mlp.fc2.{part}"]
    return out


def write_single_file(
    path: str | Path, family: Family = SD15, seed: int = 0, *, pickle: bool = False
) -> Path:
    """A tiny checkpoint in the original layout (``.safetensors``, or ``.ckpt`` pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = to_ldm(tiny_models(family, seed))
    if pickle:
        torch.save({"state_dict": state}, str(path))
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path


def write_vae_file(path: str | Path, seed: int = 1) -> Path:
    """A standalone tiny VAE in LDM layout (as VAE files in ``models/vae`` are)."""
    from safetensors.torch import save_file

    models = tiny_models(SD15, seed)
    state = {k.removeprefix(VAE): v for k, v in to_ldm(models).items() if k.startswith(VAE)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_diffusers_folder(path: str | Path, family: Family = SD15, seed: int = 0) -> Path:
    """A tiny diffusers pipeline folder."""
    from midrun.diffusion.tokenizer import write_tokenizer_files

    root = Path(path)
    models = tiny_models(family, seed)
    models.unet.save_pretrained(root / "unet")
    models.vae.save_pretrained(root / "vae")
    models.text_encoders[0].save_pretrained(root / "text_encoder")
    if family is SDXL:
        models.text_encoders[1].save_pretrained(root / "text_encoder_2")
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(
        (family.config_dir / "scheduler.json").read_text("utf-8"), "utf-8"
    )
    (root / "model_index.json").write_text(
        (family.config_dir / "model_index.json").read_text("utf-8"), "utf-8"
    )
    write_tokenizer_files(root / "tokenizer")
    return root


def lora_targets(models: TinyModels) -> dict[str, torch.nn.Module]:
    """Modules a typical LoRA adapts: attention projections of the UNet and text encoders,
    keyed ``unet:<diffusers name>``, ``te1:<name>``, ``te2:<name>``."""
    targets: dict[str, torch.nn.Module] = {}
    for name, module in models.unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0", "proj_in")):
            targets[f"unet:{name}"] = module
    for index, encoder in enumerate(models.text_encoders, start=1):
        for name, module in encoder.named_modules():
            if name.endswith(("self_attn.q_proj", "self_attn.v_proj", "mlp.fc1")):
                targets[f"te{index}:{name}"] = module
    return targets


def write_lora(
    path: str | Path,
    family: Family = SD15,
    *,
    style: LoraStyle = "kohya",
    rank: int = 4,
    alpha: float | None = 2.0,
    seed: int = 7,
    scale: float = 0.5,
) -> Path:
    """A LoRA for the tiny models of ``family`` in one of three key styles."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    models = tiny_models(family)
    unet_map = ldm_keys.unet_module_map(models.unet.config)
    state: dict[str, torch.Tensor] = {}
    for target, module in lora_targets(models).items():
        component, name = target.split(":", 1)
        weight = module.weight
        in_features = weight.shape[1]
        down = torch.randn((rank, in_features, *weight.shape[2:]), generator=generator)
        up = torch.randn((weight.shape[0], rank, *([1] * (weight.ndim - 2))), generator=generator)
        down, up = down * scale / in_features**0.5, up * scale / rank**0.5
        if style == "kohya":
            if component == "unet":
                base = "lora_unet_" + (
                    _renamed(name, unet_map) if family is SDXL else name
                ).replace(".", "_")
            else:
                te = "te" if family is SD15 else component
                base = f"lora_{te}_" + name.replace(".", "_")
            keys = (f"{base}.lora_down.weight", f"{base}.lora_up.weight", f"{base}.alpha")
        elif style == "comfy":
            if component == "unet":
                base = "diffusion_model." + _renamed(name, unet_map)
            else:
                te = "te" if family is SD15 else component
                base = f"lora_{te}_" + name.replace(".", "_")
            keys = (f"{base}.lora_down.weight", f"{base}.lora_up.weight", f"{base}.alpha")
        else:
            owner = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}[component]
            base = f"{owner}.{name}"
            keys = (f"{base}.lora_A.weight", f"{base}.lora_B.weight", f"{base}.alpha")
        state[keys[0]] = down.contiguous()
        state[keys[1]] = up.contiguous()
        if alpha is not None:
            state[keys[2]] = torch.tensor(float(alpha))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_taesd(folder: str | Path, seed: int = 11) -> Path:
    """A tiny TAESD-architecture decoder (diffusers ``AutoencoderTiny`` folder)."""
    from diffusers import AutoencoderTiny

    model = AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    _randomise(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(Path(folder))
    return Path(folder)
