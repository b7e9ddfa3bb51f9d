"""Model families midrun runs, and what differs between them.

A family fixes how latents are scaled in and out of the UNet, how text is encoded, and
the linear latent-to-RGB map used for cheap previews. The latent-to-RGB factors are the
published least-squares fits for the SD1.5 and SDXL VAEs (as used by ComfyUI's previews).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from midrun.core.errors import MidrunError


class UnsupportedModel(MidrunError):
    type = "unsupported_model"


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    #: ``process_in``: the sampler works on ``latent * scaling_factor`` (ComfyUI's LATENT
    #: dicts and VAE outputs are unscaled).
    scaling_factor: float
    latent_channels: int
    #: Per text encoder: (hidden layer used by default, apply the final layer norm to it).
    #: SD1.5 uses CLIP-L's last layer; SDXL the penultimate layers of CLIP-L and CLIP-G.
    text_layers: tuple[tuple[int, bool], ...]
    #: Pad token of each tokenizer (SDXL's CLIP-G tokenizer pads with "!").
    pad_tokens: tuple[str, ...]
    latent_rgb_factors: tuple[tuple[float, float, float], ...]
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def config_dir(self) -> Path:
        """The shipped diffusers configs of the full-size model of this family."""
        return Path(str(resources.files("midrun.diffusion").joinpath("configs", self.name)))

    @property
    def pooled(self) -> bool:
        """Whether the UNet takes a pooled text embedding and size conditioning."""
        return self.name == "sdxl"


SD15 = Family(
    name="sd15",
    scaling_factor=0.18215,
    latent_channels=4,
    text_layers=((-1, True),),
    pad_tokens=("<|endoftext|>",),
    latent_rgb_factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)

SDXL = Family(
    name="sdxl",
    scaling_factor=0.13025,
    latent_channels=4,
    text_layers=((-2, False), (-2, False)),
    pad_tokens=("<|endoftext|>", "!"),
    latent_rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    latent_rgb_bias=(0.1084, -0.0175, -0.0011),
)

FAMILIES = {f.name: f for f in (SD15, SDXL)}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnsupportedModel(
            f"Unknown model family {name!r}; midrun runs {', '.join(FAMILIES)}"
        ) from None
