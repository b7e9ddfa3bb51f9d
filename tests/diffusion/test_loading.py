"""Loading models offline: single files (SD1.5, SDXL, pickle), diffusers folders, VAE and
LoRA files, the models folder, and the shared model cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midrun.diffusion import checkpoints, testing
from midrun.diffusion.families import SD15, SDXL, UnsupportedModel
from midrun.diffusion.lora import LoraError, load_lora, parse_lora
from midrun.diffusion.model_cache import ModelCache
from midrun.diffusion.models import DiffusionModel, TextEncoder
from midrun.diffusion.paths import ModelNotFound, ModelPaths
from tests.diffusion.conftest import (
    FOLDER_CKPT,
    LORAS,
    PICKLE_CKPT,
    SD15_CKPT,
    SDXL_CKPT,
    VAE_FILE,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("family", [SD15, SDXL], ids=["sd15", "sdxl"])
def test_single_file_round_trips_every_weight(family, tmp_path: Path) -> None:
    """Written in the original layout, read back through diffusers' converters with
    configs inferred from shapes: every tensor of every component comes back."""
    original = testing.tiny_models(family, seed=3)
    path = testing.write_single_file(tmp_path / "m.safetensors", family, seed=3)
    loaded = checkpoints.load_single_file(path)
    assert loaded.family is family
    _same_weights(original.unet, loaded.unet)
    _same_weights(original.vae, loaded.vae)
    assert len(loaded.text_encoders) == len(original.text_encoders)
    for a, b in zip(original.text_encoders, loaded.text_encoders, strict=True):
        _same_weights(a, b)
    assert loaded.configs["unet"]["block_out_channels"] == [32, 64]
    assert loaded.configs["unet"]["cross_attention_dim"] == (32 if family is SD15 else 64)


def test_inferred_unet_config_matches_real_sdxl_layout() -> None:
    """Shapes of the real SDXL UNet (no weights needed: meta tensors) give back the shipped
    config's architecture."""
    from diffusers import UNet2DConditionModel

    from midrun.diffusion import ldm_keys

    config = checkpoints._shipped(SDXL, "unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    module_map = ldm_keys.unet_module_map(unet.config)
    state = {
        checkpoints.UNET + testing._renamed(k, module_map): v for k, v in unet.state_dict().items()
    }
    state[checkpoints.SDXL_CLIP_G + "text_projection"] = torch.empty(1280, 1280, device="meta")
    inferred = checkpoints.unet_config(state, SDXL)
    for key in (
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "transformer_layers_per_block",
        "cross_attention_dim",
        "use_linear_projection",
        "attention_head_dim",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
    ):
        assert inferred[key] == config[key], key


def test_pickle_checkpoint_loads_weights_only(models) -> None:
    loaded = checkpoints.load_components(models.models_dir / "checkpoints" / PICKLE_CKPT)
    reference = checkpoints.load_components(models.models_dir / "checkpoints" / SD15_CKPT)
    _same_weights(loaded.unet, reference.unet)


class Payload:
    def __reduce__(self):  # what a malicious pickle would run
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Payload()}}, str(path))
    with pytest.raises(UnsupportedModel, match="weights-only"):
        checkpoints.read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_diffusers_folder(models) -> None:
    loaded = checkpoints.load_components(models.models_dir / "checkpoints" / FOLDER_CKPT)
    _same_weights(loaded.unet, testing.tiny_models(SD15).unet)
    assert loaded.family is SD15


def test_not_a_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(UnsupportedModel, match="no UNet weights"):
        checkpoints.load_single_file(tmp_path / "x.safetensors")
    (tmp_path / "y.gguf").write_bytes(b"x")
    with pytest.raises(UnsupportedModel, match="unknown weights format"):
        checkpoints.read_state_dict(tmp_path / "y.gguf")


def test_truncated_checkpoint_names_what_is_missing(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = testing.to_ldm(testing.tiny_models(SD15))
    del state["model.diffusion_model.out.0.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(UnsupportedModel, match="1 missing"):
        checkpoints.load_single_file(tmp_path / "broken.safetensors")


def test_vae_file(models) -> None:
    vae = checkpoints.load_vae_file(models.models_dir / "vae" / VAE_FILE)
    _same_weights(vae, testing.tiny_models(SD15, seed=1).vae)


def test_text_encoding_shapes(runtime) -> None:
    sd15 = TextEncoder(runtime.checkpoint(SD15_CKPT))
    [[cond, extra]] = sd15.encode("a red star")
    assert cond.shape == (1, 77, 32) and extra == {}
    [[long, _]] = sd15.encode(" ".join(["star"] * 100))
    assert long.shape == (1, 154, 32)  # two 77-token windows
    skip = sd15.with_layer(-2).encode("a red star")[0][0]
    assert not torch.equal(skip, cond)
    xl = TextEncoder(runtime.checkpoint(SDXL_CKPT))
    [[cond_xl, extra_xl]] = xl.encode("a red star")
    assert cond_xl.shape == (1, 77, 64)  # CLIP-L and CLIP-G features side by side
    assert extra_xl["pooled_output"].shape == (1, 32)
    assert not torch.equal(cond, sd15.encode("a blue star")[0][0])


def test_lora_styles_parse_to_the_same_adapters(models) -> None:
    parsed = {s: load_lora(models.models_dir / "loras" / n) for s, n in LORAS.items()}
    counts = {s: len(p.deltas) for s, p in parsed.items()}
    assert len(set(counts.values())) == 1 and counts["kohya"] > 0
    with pytest.raises(LoraError, match="no LoRA weights"):
        parse_lora({"foo.weight": torch.zeros(2)}, "bad.safetensors")


def test_lora_adapters_do_not_touch_base_weights(runtime) -> None:
    base = runtime.checkpoint(SD15_CKPT)
    before = {k: v.clone() for k, v in base.components.unet.state_dict().items()}
    lora = runtime.lora(LORAS["kohya"])
    model = DiffusionModel(base).with_lora(lora, 1.0)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0])
    plain = DiffusionModel(base).predict(x, t, context)
    adapted = model.predict(x, t, context)
    zero = DiffusionModel(base).with_lora(lora, 0.0).predict(x, t, context)
    assert not torch.allclose(plain, adapted)
    assert torch.equal(plain, zero)
    assert torch.equal(DiffusionModel(base).predict(x, t, context), plain)
    after = base.components.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # On one adapted layer the LoRA path is linear in the strength.
    adapters = base.adapters.get("unet")
    name = next(n for n in adapters._hooks if n.endswith("attn1.to_q"))
    layer = adapters.modules[name]
    h = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    outputs = {}
    for strength in (0.0, 0.5, 1.0):
        with adapters.applied([(lora, strength)], "unet"):
            outputs[strength] = layer(h)
    assert torch.equal(layer(h), outputs[0.0])  # outside the block: the plain layer
    assert torch.allclose(outputs[0.5], (outputs[0.0] + outputs[1.0]) / 2, atol=1e-6)


def test_lora_for_another_family_is_refused(runtime) -> None:
    base = runtime.checkpoint(SD15_CKPT)
    from tests.diffusion.conftest import XL_LORA

    lora = runtime.lora(XL_LORA)
    model = DiffusionModel(base).with_lora(lora, 1.0)
    with pytest.raises(LoraError, match="another model family"):
        model.predict(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]), torch.zeros(1, 77, 32))


def test_model_paths_confine_names(models, tmp_path: Path) -> None:
    paths = ModelPaths.from_dir(models.models_dir)
    assert SD15_CKPT in paths.names("checkpoints")
    assert SDXL_CKPT in paths.names("checkpoints")
    assert FOLDER_CKPT in paths.names("checkpoints")
    for bad in ("../vae/" + VAE_FILE, "/etc/passwd", "sub/../../x"):
        with pytest.raises(ModelNotFound):
            paths.find("checkpoints", bad)
    with pytest.raises(ModelNotFound, match="not found"):
        paths.find("checkpoints", "missing.safetensors")


def test_extra_model_paths_yaml(models, tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere" / "loras"
    extra.mkdir(parents=True)
    (extra / "mine.safetensors").write_bytes(b"")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(
        "comfyui:\n    base_path: elsewhere\n    loras: |\n        loras\n        more\n",
        "utf-8",
    )
    paths = ModelPaths.from_dir(models.models_dir, yaml_file)
    assert "mine.safetensors" in paths.names("loras")
    assert LORAS["kohya"] in paths.names("loras")
    assert paths.find("loras", "mine.safetensors") == extra / "mine.safetensors"
    # A link the owner placed in a models folder is followed; names still cannot climb out.
    (models.models_dir / "loras" / "linked").symlink_to(extra, target_is_directory=True)
    try:
        assert "linked/mine.safetensors" in paths.names("loras")
        assert paths.find("loras", "linked/mine.safetensors").is_file()
    finally:
        (models.models_dir / "loras" / "linked").unlink()


def test_model_listings_follow_changes_in_any_scanned_folder(tmp_path: Path) -> None:
    # Listings are cached by folder mtimes: adding, nesting and removing files shows at once.
    loras = tmp_path / "loras"
    paths = ModelPaths({"loras": [loras]})
    assert paths.names("loras") == []
    loras.mkdir()
    (loras / "a.safetensors").write_bytes(b"")
    assert paths.names("loras") == ["a.safetensors"]
    (loras / "styles").mkdir()
    assert paths.names("loras") == ["a.safetensors"]
    (loras / "styles" / "b.safetensors").write_bytes(b"")
    assert paths.names("loras") == ["a.safetensors", "styles/b.safetensors"]
    (loras / "a.safetensors").unlink()
    assert paths.names("loras") == ["styles/b.safetensors"]


def test_model_cache_lru_under_budget() -> None:
    cache = ModelCache(budget_bytes=250)
    loads: list[str] = []

    def loader(name: str):
        return lambda: loads.append(name) or name

    size = lambda _: 100  # noqa: E731
    cache.get("a", loader("a"), size)
    cache.get("b", loader("b"), size)
    cache.get("a", loader("a"), size)  # a is now the most recent
    cache.get("c", loader("c"), size)  # over budget: b goes
    assert cache.keys() == ["a", "c"]
    cache.get("b", loader("b"), size)
    assert loads == ["a", "b", "c", "b"]
    stats = cache.snapshot()
    assert (stats.hits, stats.misses, stats.evictions) == (1, 4, 2)


def test_runtime_shares_one_loaded_checkpoint(runtime) -> None:
    first = runtime.checkpoint(SD15_CKPT)
    assert runtime.checkpoint(SD15_CKPT) is first
    assert runtime.cache.snapshot().misses == 1


def test_adapters_forget_a_lora_once_nothing_holds_it(runtime, models) -> None:
    import gc

    base = runtime.checkpoint(SD15_CKPT)
    lora = load_lora(models.models_dir / "loras" / LORAS["kohya"])  # not in the cache
    DiffusionModel(base).with_lora(lora, 1.0).predict(
        torch.zeros(1, 4, 8, 8), torch.tensor([10.0]), torch.zeros(1, 77, 32)
    )
    adapters = base.adapters.get("unet")
    uid = lora.uid
    assert any(uid in deltas for deltas in adapters._deltas.values())
    del lora
    gc.collect()
    assert not any(uid in deltas for deltas in adapters._deltas.values())
