"""Declarations (schema only) of ComfyUI's core nodes, under ComfyUI's own names.

Each :class:`NodeType` here matches what ComfyUI's ``GET /object_info`` reports for the
class: input names, order, types, defaults, limits, tooltips, outputs, category and
display name, so ComfyUI workflows validate and the canvas draws them as in ComfyUI. None
has an implementation (``impl=None``); the diffusion runtime supplies those, and until it
does the executor refuses to run these nodes with a clear error.
"""

from __future__ import annotations

from midrun.graph.types import (
    COMBO,
    FLOAT,
    HIDDEN_EXTRA_PNGINFO,
    HIDDEN_PROMPT,
    HIDDEN_RUN_CONTEXT,
    INT,
    STRING,
    InputSpec,
    NodeType,
    OutputSpec,
)

#: ComfyUI's ``MAX_RESOLUTION`` (nodes.py).
MAX_RESOLUTION = 16384

#: Largest seed ComfyUI accepts (an unsigned 64-bit integer).
MAX_SEED = 0xFFFFFFFFFFFFFFFF

#: The samplers midrun implements, in ComfyUI's order (``comfy.samplers.KSampler.SAMPLERS``).
#: Only what midrun runs is offered; a workflow naming another sampler fails validation
#: rather than being run with a substitute.
SAMPLER_NAMES: tuple[str, ...] = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "ddim",
    "uni_pc",
)

#: The schedulers midrun implements, in ComfyUI's order (``KSampler.SCHEDULERS``).
SCHEDULER_NAMES: tuple[str, ...] = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
)

#: Resampling methods of the latent upscale nodes.
LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
#: Resampling methods of the image scale nodes.
IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")

_MODULE = "nodes"

# Node and output types passed between diffusion nodes (not widgets).
MODEL = "MODEL"
CLIP = "CLIP"
VAE = "VAE"
CONDITIONING = "CONDITIONING"
LATENT = "LATENT"
IMAGE = "IMAGE"
MASK = "MASK"

_CFG_TOOLTIP = (
    "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. "
    "Higher values result in images more closely matching the prompt however too high "
    "values will negatively impact quality."
)
_DENOISE_TOOLTIP = (
    "The amount of denoising applied, lower values will maintain the structure of the "
    "initial image allowing for image to image sampling."
)
_FILENAME_PREFIX_TOOLTIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)
_LORA_DESCRIPTION = (
    "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents "
    "are denoised such as applying styles. Multiple LoRA nodes can be linked together."
)
_SAVE_IMAGE_DESCRIPTION = "Saves the input images to your ComfyUI output directory."


def _checkpoint_loader_simple() -> NodeType:
    return NodeType(
        "CheckpointLoaderSimple",
        inputs=(
            InputSpec(
                "ckpt_name",
                COMBO,
                choices_source="checkpoints",
                tooltip="The name of the checkpoint (model) to load.",
            ),
        ),
        outputs=(
            OutputSpec(MODEL, tooltip="The model used for denoising latents."),
            OutputSpec(CLIP, tooltip="The CLIP model used for encoding text prompts."),
            OutputSpec(
                VAE,
                tooltip="The VAE model used for encoding and decoding images to and from "
                "latent space.",
            ),
        ),
        category="loaders",
        display_name="Load Checkpoint",
        description="Loads a diffusion model checkpoint, diffusion models are used to "
        "denoise latents.",
        module=_MODULE,
    )


def _clip_text_encode() -> NodeType:
    return NodeType(
        "CLIPTextEncode",
        inputs=(
            InputSpec(
                "text",
                STRING,
                multiline=True,
                dynamic_prompts=True,
                tooltip="The text to be encoded.",
            ),
            InputSpec("clip", CLIP, tooltip="The CLIP model used for encoding the text."),
        ),
        outputs=(
            OutputSpec(
                CONDITIONING,
                tooltip="A conditioning containing the embedded text used to guide the "
                "diffusion model.",
            ),
        ),
        category="conditioning",
        display_name="CLIP Text Encode (Prompt)",
        description="Encodes a text prompt using a CLIP model into an embedding that can be "
        "used to guide the diffusion model towards generating specific images.",
        module=_MODULE,
    )


def _clip_set_last_layer() -> NodeType:
    return NodeType(
        "CLIPSetLastLayer",
        inputs=(
            InputSpec("clip", CLIP),
            InputSpec("stop_at_clip_layer", INT, default=-1, min=-24, max=-1, step=1),
        ),
        outputs=(OutputSpec(CLIP),),
        category="conditioning",
        display_name="CLIP Set Last Layer",
        module=_MODULE,
    )


def _empty_latent_image() -> NodeType:
    return NodeType(
        "EmptyLatentImage",
        inputs=(
            InputSpec(
                "width",
                INT,
                default=512,
                min=16,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="The width of the latent images in pixels.",
            ),
            InputSpec(
                "height",
                INT,
                default=512,
                min=16,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="The height of the latent images in pixels.",
            ),
            InputSpec(
                "batch_size",
                INT,
                default=1,
                min=1,
                max=4096,
                tooltip="The number of latent images in the batch.",
            ),
        ),
        outputs=(OutputSpec(LATENT, tooltip="The empty latent image batch."),),
        category="latent",
        display_name="Empty Latent Image",
        description="Create a new batch of empty latent images to be denoised via sampling.",
        module=_MODULE,
    )


def _ksampler() -> NodeType:
    return NodeType(
        "KSampler",
        inputs=(
            InputSpec(
                "model", MODEL, hot=True, tooltip="The model used for denoising the input latent."
            ),
            InputSpec(
                "seed",
                INT,
                default=0,
                min=0,
                max=MAX_SEED,
                control_after_generate=True,
                hot=True,
                tooltip="The random seed used for creating the noise.",
            ),
            InputSpec(
                "steps",
                INT,
                default=20,
                min=1,
                max=10000,
                hot=True,
                tooltip="The number of steps used in the denoising process.",
            ),
            InputSpec(
                "cfg",
                FLOAT,
                default=8.0,
                min=0.0,
                max=100.0,
                step=0.1,
                round=0.01,
                hot=True,
                tooltip=_CFG_TOOLTIP,
            ),
            InputSpec(
                "sampler_name",
                COMBO,
                choices=SAMPLER_NAMES,
                tooltip="The algorithm used when sampling, this can affect the quality, "
                "speed, and style of the generated output.",
            ),
            InputSpec(
                "scheduler",
                COMBO,
                choices=SCHEDULER_NAMES,
                tooltip="The scheduler controls how noise is gradually removed to form the image.",
            ),
            InputSpec(
                "positive",
                CONDITIONING,
                hot=True,
                tooltip="The conditioning describing the attributes you want to include in "
                "the image.",
            ),
            InputSpec(
                "negative",
                CONDITIONING,
                hot=True,
                tooltip="The conditioning describing the attributes you want to exclude from "
                "the image.",
            ),
            InputSpec("latent_image", LATENT, tooltip="The latent image to denoise."),
            InputSpec(
                "denoise",
                FLOAT,
                default=1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                hot=True,
                tooltip=_DENOISE_TOOLTIP,
            ),
        ),
        outputs=(OutputSpec(LATENT, tooltip="The denoised latent."),),
        category="sampling",
        display_name="KSampler",
        description="Uses the provided model, positive and negative conditioning to denoise "
        "the latent image.",
        module=_MODULE,
    )


def _ksampler_advanced() -> NodeType:
    return NodeType(
        "KSamplerAdvanced",
        inputs=(
            InputSpec("model", MODEL, hot=True),
            InputSpec("add_noise", COMBO, choices=("enable", "disable")),
            InputSpec(
                "noise_seed",
                INT,
                default=0,
                min=0,
                max=MAX_SEED,
                control_after_generate=True,
                hot=True,
            ),
            InputSpec("steps", INT, default=20, min=1, max=10000, hot=True),
            InputSpec(
                "cfg", FLOAT, default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, hot=True
            ),
            InputSpec("sampler_name", COMBO, choices=SAMPLER_NAMES),
            InputSpec("scheduler", COMBO, choices=SCHEDULER_NAMES),
            InputSpec("positive", CONDITIONING, hot=True),
            InputSpec("negative", CONDITIONING, hot=True),
            InputSpec("latent_image", LATENT),
            InputSpec("start_at_step", INT, default=0, min=0, max=10000),
            InputSpec("end_at_step", INT, default=10000, min=0, max=10000, hot=True),
            InputSpec("return_with_leftover_noise", COMBO, choices=("disable", "enable")),
        ),
        outputs=(OutputSpec(LATENT),),
        category="sampling",
        display_name="KSampler (Advanced)",
        module=_MODULE,
    )


def _vae_decode() -> NodeType:
    return NodeType(
        "VAEDecode",
        inputs=(
            InputSpec("samples", LATENT, tooltip="The latent to be decoded."),
            InputSpec("vae", VAE, tooltip="The VAE model used for decoding the latent."),
        ),
        outputs=(OutputSpec(IMAGE, tooltip="The decoded image."),),
        category="latent",
        display_name="VAE Decode",
        description="Decodes latent images back into pixel space images.",
        module=_MODULE,
    )


def _vae_encode() -> NodeType:
    return NodeType(
        "VAEEncode",
        inputs=(InputSpec("pixels", IMAGE), InputSpec("vae", VAE)),
        outputs=(OutputSpec(LATENT),),
        category="latent",
        display_name="VAE Encode",
        module=_MODULE,
    )


def _vae_loader() -> NodeType:
    return NodeType(
        "VAELoader",
        inputs=(InputSpec("vae_name", COMBO, choices_source="vae"),),
        outputs=(OutputSpec(VAE),),
        category="loaders",
        display_name="Load VAE",
        module=_MODULE,
    )


def _lora_strength(name: str, tooltip: str | None = None) -> InputSpec:
    return InputSpec(name, FLOAT, default=1.0, min=-100.0, max=100.0, step=0.01, tooltip=tooltip)


def _lora_loader() -> NodeType:
    return NodeType(
        "LoraLoader",
        inputs=(
            InputSpec("model", MODEL, tooltip="The diffusion model the LoRA will be applied to."),
            InputSpec("clip", CLIP, tooltip="The CLIP model the LoRA will be applied to."),
            InputSpec("lora_name", COMBO, choices_source="loras", tooltip="The name of the LoRA."),
            _lora_strength(
                "strength_model",
                "How strongly to modify the diffusion model. This value can be negative.",
            ),
            _lora_strength(
                "strength_clip",
                "How strongly to modify the CLIP model. This value can be negative.",
            ),
        ),
        outputs=(
            OutputSpec(MODEL, tooltip="The modified diffusion model."),
            OutputSpec(CLIP, tooltip="The modified CLIP model."),
        ),
        category="loaders",
        display_name="Load LoRA",
        description=_LORA_DESCRIPTION,
        module=_MODULE,
    )


def _lora_loader_model_only() -> NodeType:
    # ComfyUI derives this class from LoraLoader, so it inherits LoraLoader's category,
    # description and first output tooltip; it has no display-name mapping of its own.
    return NodeType(
        "LoraLoaderModelOnly",
        inputs=(
            InputSpec("model", MODEL),
            InputSpec("lora_name", COMBO, choices_source="loras"),
            _lora_strength("strength_model"),
        ),
        outputs=(OutputSpec(MODEL, tooltip="The modified diffusion model."),),
        category="loaders",
        display_name="LoraLoaderModelOnly",
        description=_LORA_DESCRIPTION,
        module=_MODULE,
    )


def _load_image() -> NodeType:
    return NodeType(
        "LoadImage",
        inputs=(InputSpec("image", COMBO, choices_source="input_images", image_upload=True),),
        outputs=(OutputSpec(IMAGE), OutputSpec(MASK)),
        category="image",
        display_name="Load Image",
        module=_MODULE,
    )


def _image_hidden() -> tuple[InputSpec, InputSpec]:
    return (
        InputSpec("prompt", HIDDEN_PROMPT, section="hidden"),
        InputSpec("extra_pnginfo", HIDDEN_EXTRA_PNGINFO, section="hidden"),
    )


def _save_image() -> NodeType:
    return NodeType(
        "SaveImage",
        inputs=(
            InputSpec("images", IMAGE, tooltip="The images to save."),
            InputSpec(
                "filename_prefix", STRING, default="ComfyUI", tooltip=_FILENAME_PREFIX_TOOLTIP
            ),
            *_image_hidden(),
        ),
        # Current ComfyUI passes the images through, so a save can feed further nodes.
        outputs=(OutputSpec(IMAGE, "images"),),
        category="image",
        display_name="Save Image",
        description=_SAVE_IMAGE_DESCRIPTION,
        output_node=True,
        module=_MODULE,
    )


def _preview_image() -> NodeType:
    # ComfyUI derives PreviewImage from SaveImage: same category, output flag and
    # (inherited, verbatim) description.
    return NodeType(
        "PreviewImage",
        inputs=(InputSpec("images", IMAGE), *_image_hidden()),
        outputs=(OutputSpec(IMAGE, "images"),),
        category="image",
        display_name="Preview Image",
        description=_SAVE_IMAGE_DESCRIPTION,
        output_node=True,
        module=_MODULE,
    )


def _save_image_websocket() -> NodeType:
    # ComfyUI ships it in custom_nodes/websocket_image_save.py: full-size PNGs sent over
    # the client's WebSocket as binary image frames, nothing written, no metadata.
    return NodeType(
        "SaveImageWebsocket",
        inputs=(InputSpec("images", IMAGE), InputSpec("context", HIDDEN_RUN_CONTEXT,
                                                       section="hidden")),
        outputs=(),
        category="image",
        display_name="Save Image (Websocket)",
        output_node=True,
        module="custom_nodes.websocket_image_save",
    )


def _latent_upscale() -> NodeType:
    return NodeType(
        "LatentUpscale",
        inputs=(
            InputSpec("samples", LATENT),
            InputSpec("upscale_method", COMBO, choices=LATENT_UPSCALE_METHODS),
            InputSpec("width", INT, default=512, min=0, max=MAX_RESOLUTION, step=8),
            InputSpec("height", INT, default=512, min=0, max=MAX_RESOLUTION, step=8),
            InputSpec("crop", COMBO, choices=CROP_METHODS),
        ),
        outputs=(OutputSpec(LATENT),),
        category="latent",
        display_name="Upscale Latent",
        module=_MODULE,
    )


def _latent_upscale_by() -> NodeType:
    return NodeType(
        "LatentUpscaleBy",
        inputs=(
            InputSpec("samples", LATENT),
            InputSpec("upscale_method", COMBO, choices=LATENT_UPSCALE_METHODS),
            InputSpec("scale_by", FLOAT, default=1.5, min=0.01, max=8.0, step=0.01),
        ),
        outputs=(OutputSpec(LATENT),),
        category="latent",
        display_name="Upscale Latent By",
        module=_MODULE,
    )


def _image_scale() -> NodeType:
    return NodeType(
        "ImageScale",
        inputs=(
            InputSpec("image", IMAGE),
            InputSpec("upscale_method", COMBO, choices=IMAGE_UPSCALE_METHODS),
            InputSpec("width", INT, default=512, min=0, max=MAX_RESOLUTION, step=1),
            InputSpec("height", INT, default=512, min=0, max=MAX_RESOLUTION, step=1),
            InputSpec("crop", COMBO, choices=CROP_METHODS),
        ),
        outputs=(OutputSpec(IMAGE),),
        category="image/upscaling",
        display_name="Upscale Image",
        module=_MODULE,
    )


def _conditioning_combine() -> NodeType:
    return NodeType(
        "ConditioningCombine",
        inputs=(
            InputSpec("conditioning_1", CONDITIONING),
            InputSpec("conditioning_2", CONDITIONING),
        ),
        outputs=(OutputSpec(CONDITIONING),),
        category="conditioning",
        display_name="Conditioning (Combine)",
        module=_MODULE,
    )


def comfy_core_types() -> list[NodeType]:
    """Fresh declarations of ComfyUI's core node types (no implementations attached)."""
    return [
        _checkpoint_loader_simple(),
        _clip_text_encode(),
        _clip_set_last_layer(),
        _empty_latent_image(),
        _ksampler(),
        _ksampler_advanced(),
        _vae_decode(),
        _vae_encode(),
        _vae_loader(),
        _lora_loader(),
        _lora_loader_model_only(),
        _load_image(),
        _save_image(),
        _preview_image(),
        _save_image_websocket(),
        _latent_upscale(),
        _latent_upscale_by(),
        _image_scale(),
        _conditioning_combine(),
    ]
