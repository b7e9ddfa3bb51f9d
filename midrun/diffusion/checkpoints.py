"""Loading SD1.5 and SDXL models offline: single-file checkpoints and diffusers folders.

A single-file checkpoint keeps Stability's original (LDM) names. Its family is read from
its keys, its dimensions from the shapes of its weights, and the rest of each component's
configuration (activation, head counts, schedule) from the configs midrun ships for the
family. diffusers' own converters then rename the weights, and the diffusers / transformers
modules are built from those configs: nothing is looked up on a model hub.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from midrun.diffusion.families import SD15, SDXL, Family, UnsupportedModel
from midrun.diffusion.schedule import ScheduleConfig

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD15_CLIP = "cond_stage_model.transformer."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."

SAFE_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

StateDict = dict[str, torch.Tensor]


@dataclass(eq=False)
class Components:
    """The modules of one checkpoint, on the CPU in float32 until placed."""

    family: Family
    unet: Any
    vae: Any
    text_encoders: list[Any]
    schedule: ScheduleConfig
    source: str
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a ``.safetensors`` file, or of a pickle file loaded with
    ``weights_only=True`` (no code in the file is ever run)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if suffix in PICKLE_SUFFIXES:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle refusing a non-tensor object, or a bad file
            raise UnsupportedModel(
                f"{path.name} could not be read as a weights-only checkpoint: {exc}. "
                "Convert it to .safetensors."
            ) from exc
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        if not isinstance(data, dict):
            raise UnsupportedModel(f"{path.name} does not hold a state dict")
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    raise UnsupportedModel(
        f"{path.name}: unknown weights format {suffix!r}; use .safetensors or .ckpt"
    )


def detect_family(state: Mapping[str, Any]) -> Family:
    """SD1.5 or SDXL, from which modules a checkpoint holds."""
    if f"{UNET}input_blocks.0.0.weight" not in state:
        raise UnsupportedModel(
            "Not a Stable Diffusion checkpoint: no UNet weights (model.diffusion_model.*)"
        )
    if f"{UNET}label_emb.0.0.weight" in state and any(k.startswith(SDXL_CLIP_G) for k in state):
        return SDXL
    if any(k.startswith(SD15_CLIP) for k in state):
        return SD15
    if any(k.startswith("cond_stage_model.model.") for k in state):
        raise UnsupportedModel("SD2.x checkpoints (OpenCLIP-H text encoder) are not supported")
    raise UnsupportedModel("Unknown checkpoint layout: no text encoder midrun recognises")


def _count(state: Mapping[str, Any], pattern: str) -> int:
    """How many ``{i}`` indices exist for ``pattern`` (consecutive from 0)."""
    n = 0
    while pattern.format(i=n) in state:
        n += 1
    return n


def _transformer_depth(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return len(indices)


def unet_config(state: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """The diffusers UNet config of an LDM UNet, dimensions read from weight shapes."""
    config = _shipped(family, "unet")
    conv_in = state[f"{UNET}input_blocks.0.0.weight"]
    levels: list[list[int]] = [[]]
    n = 1
    while True:
        if f"{UNET}input_blocks.{n}.0.op.weight" in state:
            levels.append([])
        elif f"{UNET}input_blocks.{n}.0.in_layers.0.weight" in state:
            levels[-1].append(n)
        else:
            break
        n += 1
    per_level = {len(level) for level in levels}
    if len(per_level) != 1:
        raise UnsupportedModel("UNet levels have different numbers of residual blocks")
    channels = [
        state[f"{UNET}input_blocks.{lvl[0]}.0.out_layers.3.weight"].shape[0] for lvl in levels
    ]
    depths = [_transformer_depth(state, f"{UNET}input_blocks.{lvl[0]}.1.") for lvl in levels]
    mid_depth = _transformer_depth(state, f"{UNET}middle_block.1.")
    attention = [d > 0 for d in depths]
    if attention[-1] and depths[-1] != mid_depth:
        raise UnsupportedModel("UNet middle block depth differs from its last level's")
    # Levels without attention ignore their depth, except that diffusers builds the middle
    # block with the last level's.
    layers = [d if d else 1 for d in depths[:-1]] + [depths[-1] or mid_depth]
    proj_in = next(
        state[f"{UNET}input_blocks.{lvl[0]}.1.proj_in.weight"]
        for lvl, a in zip(levels, attention, strict=True)
        if a
    )
    to_k = next(k for k in state if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    config.update(
        in_channels=conv_in.shape[1],
        out_channels=state[f"{UNET}out.2.weight"].shape[0],
        block_out_channels=channels,
        layers_per_block=per_level.pop(),
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        cross_attention_dim=state[to_k].shape[1],
        use_linear_projection=proj_in.ndim == 2,
        transformer_layers_per_block=layers if len(set(layers)) > 1 else layers[0],
    )
    if family.pooled:
        adm = state[f"{UNET}label_emb.0.0.weight"].shape[1]
        pooled = state[f"{SDXL_CLIP_G}text_projection"].shape[1]
        config.update(
            attention_head_dim=[max(1, c // 64) for c in channels],
            projection_class_embeddings_input_dim=adm,
            addition_time_embed_dim=(adm - pooled) // 6,
        )
    config["sample_size"] = config.get("sample_size", 64)
    return config


def vae_config(state: Mapping[str, Any], family: Family, prefix: str = VAE) -> dict[str, Any]:
    """The diffusers AutoencoderKL config of an LDM VAE."""
    config = _shipped(family, "vae")
    levels = _count(state, prefix + "encoder.down.{i}.block.0.conv1.weight")
    if not levels:
        raise UnsupportedModel("No VAE weights (encoder.down.*) found")
    channels = [
        state[f"{prefix}encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(levels)
    ]
    config.update(
        in_channels=state[f"{prefix}encoder.conv_in.weight"].shape[1],
        out_channels=state[f"{prefix}decoder.conv_out.weight"].shape[0],
        latent_channels=state[f"{prefix}decoder.conv_in.weight"].shape[1],
        block_out_channels=channels,
        layers_per_block=_count(state, prefix + "encoder.down.0.block.{i}.conv1.weight"),
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
    )
    return config


def clip_config(state: Mapping[str, Any], family: Family, prefix: str) -> dict[str, Any]:
    """CLIPTextModel config of a Hugging Face layout text encoder under ``prefix``."""
    config = _shipped(family, "text_encoder")
    tokens = state[f"{prefix}text_model.embeddings.token_embedding.weight"]
    hidden = tokens.shape[1]
    config.update(
        vocab_size=tokens.shape[0],
        hidden_size=hidden,
        num_attention_heads=max(1, hidden // 64),
        num_hidden_layers=_count(
            state, prefix + "text_model.encoder.layers.{i}.self_attn.q_proj.weight"
        ),
        intermediate_size=state[f"{prefix}text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=state[
            f"{prefix}text_model.embeddings.position_embedding.weight"
        ].shape[0],
        projection_dim=hidden,
    )
    return config


def open_clip_config(state: Mapping[str, Any], family: Family, prefix: str) -> dict[str, Any]:
    """CLIPTextModelWithProjection config of an OpenCLIP text tower under ``prefix``."""
    config = _shipped(family, "text_encoder_2")
    tokens = state[f"{prefix}token_embedding.weight"]
    hidden = tokens.shape[1]
    config.update(
        vocab_size=tokens.shape[0],
        hidden_size=hidden,
        num_attention_heads=max(1, hidden // 64),
        num_hidden_layers=_count(state, prefix + "transformer.resblocks.{i}.ln_1.weight"),
        intermediate_size=state[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        max_position_embeddings=state[f"{prefix}positional_embedding"].shape[0],
        projection_dim=state[f"{prefix}text_projection"].shape[1],
    )
    return config


def _shipped(family: Family, component: str) -> dict[str, Any]:
    data = json.loads((family.config_dir / f"{component}.json").read_text("utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def schedule_config(family: Family, state: Mapping[str, Any] | None = None) -> ScheduleConfig:
    data = _shipped(family, "scheduler")
    prediction = "v_prediction" if state is not None and "v_pred" in state else "eps"
    return ScheduleConfig(
        beta_start=data["beta_start"],
        beta_end=data["beta_end"],
        timesteps=data["num_train_timesteps"],
        prediction=prediction,
    )


def _build(
    factory: Any,
    state: StateDict,
    what: str,
    rename: Callable[[str, set[str]], str] = lambda key, _: key,
) -> Any:
    """Build a module on the meta device, then adopt ``state``'s tensors as its weights."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = factory()
    expected = set(module.state_dict())
    state = {rename(k, expected): v for k, v in state.items()}
    missing = sorted(expected - set(state))
    unexpected = sorted(k for k in set(state) - expected if not k.endswith("position_ids"))
    if missing or unexpected:
        raise UnsupportedModel(
            f"The {what} weights do not match the architecture read from the checkpoint: "
            f"{len(missing)} missing (e.g. {', '.join(missing[:3]) or '-'}), "
            f"{len(unexpected)} unknown (e.g. {', '.join(unexpected[:3]) or '-'})"
        )
    module.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def build_unet(config: dict[str, Any], state: StateDict) -> Any:
    from diffusers import UNet2DConditionModel

    return _build(lambda: UNet2DConditionModel.from_config(config), state, "UNet")


def build_vae(config: dict[str, Any], state: StateDict) -> Any:
    from diffusers import AutoencoderKL

    return _build(lambda: AutoencoderKL.from_config(config), state, "VAE")


def build_clip(config: dict[str, Any], state: StateDict, projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _build(lambda: cls(CLIPTextConfig(**config)), state, "text encoder", _text_key)


def _text_key(key: str, expected: set[str]) -> str:
    """Files name text-encoder weights ``text_model.*``; transformers 5's CLIPTextModel
    drops that level. Map a file's name onto the module's."""
    if key in expected:
        return key
    if key.startswith("text_model.") and key.removeprefix("text_model.") in expected:
        return key.removeprefix("text_model.")
    return key


def text_module_name(name: str) -> str:
    """A text-encoder module name in the files' convention (``text_model.…``)."""
    if name.startswith(("text_model.", "text_projection")) or not name:
        return name
    return "text_model." + name


def load_single_file(path: str | Path) -> Components:
    """An SD1.5 or SDXL checkpoint in the original single-file layout."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    state = read_state_dict(path)
    family = detect_family(state)
    configs = {"unet": unet_config(state, family), "vae": vae_config(state, family)}
    unet = build_unet(configs["unet"], convert_ldm_unet_checkpoint(state, configs["unet"]))
    vae = build_vae(configs["vae"], convert_ldm_vae_checkpoint(state, configs["vae"]))
    encoders = []
    if family is SD15:
        configs["text_encoder"] = clip_config(state, family, SD15_CLIP)
        encoders.append(build_clip(configs["text_encoder"], _strip(state, SD15_CLIP)))
    else:
        configs["text_encoder"] = clip_config(state, family, SDXL_CLIP_L)
        encoders.append(build_clip(configs["text_encoder"], _strip(state, SDXL_CLIP_L)))
        configs["text_encoder_2"] = open_clip_config(state, family, SDXL_CLIP_G)
        from transformers import CLIPTextConfig

        text_config = CLIPTextConfig(**configs["text_encoder_2"])
        g_state = convert_open_clip_checkpoint(_Config(text_config), state, prefix=SDXL_CLIP_G)
        encoders.append(build_clip(configs["text_encoder_2"], g_state, projection=True))
    return Components(
        family, unet, vae, encoders, schedule_config(family, state), str(path), configs
    )


@dataclass(frozen=True, slots=True)
class _Config:
    """What diffusers' OpenCLIP converter reads from a text model: its ``config``."""

    config: Any


def _strip(state: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_diffusers_folder(path: str | Path) -> Components:
    """A diffusers pipeline folder (``model_index.json``, ``unet/``, ``vae/``, ...)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise UnsupportedModel(f"{root.name} is not a diffusers folder (no model_index.json)")
    options: dict[str, Any] = {"local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(root / "unet", **options)
    family = SDXL if unet.config.get("addition_embed_type") == "text_time" else SD15
    vae = AutoencoderKL.from_pretrained(root / "vae", **options)
    encoders = [CLIPTextModel.from_pretrained(root / "text_encoder", **options)]
    if family is SDXL:
        encoders.append(
            CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2", **options)
        )
    scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    schedule = ScheduleConfig(
        beta_start=scheduler.get("beta_start", 0.00085),
        beta_end=scheduler.get("beta_end", 0.012),
        timesteps=scheduler.get("num_train_timesteps", 1000),
        prediction="v_prediction" if scheduler.get("prediction_type") == "v_prediction" else "eps",
    )
    for module in (unet, vae, *encoders):
        module.eval().requires_grad_(False)
    return Components(_folder_family(family, vae, root), unet, vae, encoders, schedule, str(root))


def _folder_family(family: Family, vae: Any, root: Path) -> Family:
    """A folder's VAE config states its latent scale; ``latent_rgb.json`` (written by
    midrun's demo-model trainer) its preview factors. Both default to the family's."""
    changes: dict[str, Any] = {}
    scale = vae.config.get("scaling_factor")
    if scale and float(scale) != family.scaling_factor:
        changes["scaling_factor"] = float(scale)
    rgb = root / "latent_rgb.json"
    if rgb.is_file():
        data = json.loads(rgb.read_text("utf-8"))
        changes["latent_rgb_factors"] = tuple(tuple(map(float, row)) for row in data["factors"])
        changes["latent_rgb_bias"] = tuple(map(float, data["bias"]))
    return replace(family, **changes) if changes else family


def load_components(path: str | Path) -> Components:
    """A checkpoint file or a diffusers folder."""
    path = Path(path)
    if path.is_dir():
        return load_diffusers_folder(path)
    return load_single_file(path)


def load_vae_file(path: str | Path, family: Family | None = None) -> Any:
    """A standalone VAE: LDM keys (bare or under ``first_stage_model.``) or diffusers keys,
    or a diffusers ``vae`` folder."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = Path(path)
    if path.is_dir():
        return (
            AutoencoderKL.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        )
    state = read_state_dict(path)
    family = family or SD15
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in state:  # already diffusers names
        levels = _count(state, "encoder.down_blocks.{i}.resnets.0.conv1.weight")
        config = _shipped(family, "vae")
        config.update(
            block_out_channels=[
                state[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]
                for i in range(levels)
            ],
            layers_per_block=_count(state, "encoder.down_blocks.0.resnets.{i}.conv1.weight"),
            latent_channels=state["decoder.conv_in.weight"].shape[1],
            down_block_types=["DownEncoderBlock2D"] * levels,
            up_block_types=["UpDecoderBlock2D"] * levels,
        )
        return build_vae(config, dict(state))
    prefix = VAE if any(k.startswith(VAE) for k in state) else ""
    config = vae_config(state, family, prefix)
    return build_vae(config, convert_ldm_vae_checkpoint(state, config))
