"""Where a diffusers module lives in an original (LDM / ComfyUI) checkpoint.

Single-file SD1.5 and SDXL checkpoints keep Stability's original module names
(``model.diffusion_model.input_blocks.1.1.proj_in``); diffusers names the same module
``down_blocks.0.attentions.0.proj_in``. The maps here go from diffusers module prefixes
to LDM ones for a given UNet / VAE config. Loading uses diffusers' own converters; these
maps write test checkpoints in the original layout and translate LoRA key names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _resnet(m: dict[str, str], diffusers: str, ldm: str, names: Mapping[str, str]) -> None:
    for d, o in names.items():
        m[f"{diffusers}.{d}"] = f"{ldm}.{o}"


def unet_module_map(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix (without ``model.diffusion_model.``)."""
    m: dict[str, str] = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    if config.get("addition_embed_type") == "text_time":
        m["add_embedding.linear_1"] = "label_emb.0.0"
        m["add_embedding.linear_2"] = "label_emb.0.2"
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    n = 1
    for i in range(levels):
        for j in range(per_level):
            _resnet(m, f"down_blocks.{i}.resnets.{j}", f"input_blocks.{n}.0", _RESNET)
            if down_attn[i]:
                m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
            n += 1
        if i < levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            n += 1
    _resnet(m, "mid_block.resnets.0", "middle_block.0", _RESNET)
    m["mid_block.attentions.0"] = "middle_block.1"
    _resnet(m, "mid_block.resnets.1", "middle_block.2", _RESNET)
    n = 0
    for i in range(levels):
        for j in range(per_level + 1):
            _resnet(m, f"up_blocks.{i}.resnets.{j}", f"output_blocks.{n}.0", _RESNET)
            if up_attn[i]:
                m[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{n}.1"
            if j == per_level and i < levels - 1:
                slot = 2 if up_attn[i] else 1
                m[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{n}.{slot}.conv"
            n += 1
    return m


def vae_module_map(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers AutoencoderKL module prefix -> LDM prefix (without ``first_stage_model.``)."""
    m: dict[str, str] = {
        "quant_conv": "quant_conv",
        "post_quant_conv": "post_quant_conv",
    }
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    for part in ("encoder", "decoder"):
        m[f"{part}.conv_in"] = f"{part}.conv_in"
        m[f"{part}.conv_norm_out"] = f"{part}.norm_out"
        m[f"{part}.conv_out"] = f"{part}.conv_out"
        _resnet(m, f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET)
        _resnet(m, f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET)
        for d, o in _VAE_ATTENTION.items():
            m[f"{part}.mid_block.attentions.0.{d}"] = f"{part}.mid.attn_1.{o}"
    for i in range(levels):
        for j in range(per_level):
            _resnet(
                m,
                f"encoder.down_blocks.{i}.resnets.{j}",
                f"encoder.down.{i}.block.{j}",
                _VAE_RESNET,
            )
        if i < levels - 1:
            m[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        level = levels - 1 - i  # the decoder counts its levels from the bottom
        for j in range(per_level + 1):
            _resnet(
                m,
                f"decoder.up_blocks.{i}.resnets.{j}",
                f"decoder.up.{level}.block.{j}",
                _VAE_RESNET,
            )
        if i < levels - 1:
            m[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{level}.upsample.conv"
    return m


def rename(key: str, module_map: Mapping[str, str]) -> str | None:
    """``key`` with its longest mapped module prefix replaced, or None if none matches."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in module_map:
            return ".".join([module_map[prefix], *parts[cut:]])
    return None
