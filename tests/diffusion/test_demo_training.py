"""The demo model's training script, run for a few steps: it writes a diffusers folder
with a model card that CheckpointLoaderSimple loads through the normal path, with the
folder's own latent scale and preview factors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import torch

from midrun.demo_model import train
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.engine.executor import Executor
from midrun.graph.workflow import Workflow
from midrun.nodes import builtin_registry
from midrun.nodes.comfy_impl import attach
from tests.diffusion.conftest import txt2img


def test_a_short_training_run_gives_a_loadable_model(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "models" / "checkpoints" / "midrun-demo"
    config = train.Config(images=48, vae_steps=3, vae_batch=4, unet_steps=3, unet_batch=8,
                          decoder_steps=2, decoder_batch=4, log_every=1)  # fmt: skip
    lines: list[str] = []
    metrics = train.train(config, out, log=lines.append)
    assert any(line.startswith("unet 3/3") for line in lines)
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["seed"] == 0 and card["metrics"] == metrics
    assert card["seconds"] > 0 and card["hardware"]["cpus"]
    assert "training time" in (out / "MODEL_CARD.md").read_text()
    assert "decoder_recon_loss" in metrics

    # The decoder stage alone, on a trained folder: the decoder moves, the encoder (and so
    # the latent space the UNet learned) does not, and the card gains a stage.
    from diffusers import AutoencoderKL

    before = AutoencoderKL.from_pretrained(out / "vae")
    train.finetune_folder(out, train.Config(images=48, decoder_steps=2, decoder_batch=4),
                          lines.append)  # fmt: skip
    after = AutoencoderKL.from_pretrained(out / "vae")
    assert torch.equal(before.encoder.conv_in.weight, after.encoder.conv_in.weight)
    assert not torch.equal(before.decoder.conv_out.weight, after.decoder.conv_out.weight)
    card = json.loads((out / "card.json").read_text())
    assert len(card["stages"]) == 2 and card["config"]["decoder_steps"] == 2

    # More UNet training on the saved folder: UNet and text encoder move, the VAE does not.
    from diffusers import UNet2DConditionModel

    unet_before = UNet2DConditionModel.from_pretrained(out / "unet").conv_in.weight
    train.continue_folder(out, train.Config(images=48, unet_steps=2, unet_batch=4, ema=0.5,
                                            log_every=1), lines.append)  # fmt: skip
    assert any(line.startswith("unet 2/2") for line in lines)
    assert not torch.equal(
        unet_before, UNet2DConditionModel.from_pretrained(out / "unet").conv_in.weight
    )
    again = AutoencoderKL.from_pretrained(out / "vae")
    assert torch.equal(after.decoder.conv_out.weight, again.decoder.conv_out.weight)
    card = json.loads((out / "card.json").read_text())
    assert len(card["stages"]) == 3 and card["metrics"]["unet_steps_total"] == 5
    assert card["config"]["unet_steps"] == 3  # the first run's config stays on record

    # A fresh UNet and text encoder on the folder's trained VAE: the VAE is kept as it is
    # and the card lists the stages that made it before the new run.
    fresh = tmp_path / "fresh"
    train.train(train.Config(images=48, unet_steps=2, unet_batch=4, tilt=0.0), fresh,
                lines.append, vae_from=out)  # fmt: skip
    kept = AutoencoderKL.from_pretrained(fresh / "vae")
    assert torch.equal(again.decoder.conv_out.weight, kept.decoder.conv_out.weight)
    fresh_card = json.loads((fresh / "card.json").read_text())
    assert fresh_card["stages"][:3] == card["stages"] and len(fresh_card["stages"]) == 4
    assert fresh_card["config"]["tilt"] == 0.0
    assert fresh_card["metrics"]["decoder_recon_loss"] == card["metrics"]["decoder_recon_loss"]
    # The same command gives the same weights: training is reproducible from the script.
    train.train(train.Config(images=48, unet_steps=2, unet_batch=4, tilt=0.0),
                tmp_path / "again", lines.append, vae_from=out)  # fmt: skip
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (fresh / part).read_bytes() == (tmp_path / "again" / part).read_bytes(), part
    # Cards from before the tilt option drew shapes at any angle, and say so.
    del card["config"]["tilt"]
    (out / "card.json").write_text(json.dumps(card))
    _, _, stages = train.load_vae(out)
    assert all(st["command"].endswith("--tilt 180") for st in stages)
    runtime = DiffusionRuntime.create(tmp_path / "models", device="cpu",
                                      output_dir=tmp_path / "out")  # fmt: skip
    loaded = runtime.checkpoint("midrun-demo")
    assert abs(loaded.family.scaling_factor - metrics["latent_scale"]) < 1e-3  # fp16 config
    rgb = json.loads((out / "latent_rgb.json").read_text())
    assert loaded.family.latent_rgb_factors[0] == tuple(rgb["factors"][0])
    registry = attach(builtin_registry(tmp_path / "models"), runtime)
    result = asyncio.run(
        Executor().run(Workflow.from_api(txt2img("midrun-demo", steps=3)), registry)
    )
    assert result.ok, result.error
    assert result.plan.target_values()["9"][0].shape == (1, 64, 64, 3)
    assert torch.isfinite(result.plan.target_values()["9"][0]).all()

    # The evaluation runs on any model folder (here an untrained one: only the shapes of
    # its report are checked; the figures come from the real model, see the README).
    from midrun.demo_model import evaluate

    gen = evaluate.Generator(out, cfg=5.0, steps=3)
    held = evaluate.held_out_accuracy(gen, 3, seed=0)
    assert held["images"] == 3 and 0 <= held["accuracy"] <= 1
    seen = evaluate.held_out_accuracy(gen, 2, seed=0, seen=True)
    assert seen["images"] == 2 and 0 <= seen["accuracy"] <= 1
    edits = evaluate.edit_success(gen, 2, [1, 2], seed=0)
    assert set(edits["blue_share_by_edit_step"]) == {"1", "2"}
    assert evaluate.timing(gen, 1)["median_s"] > 0
    # --record keeps the report in the card, replacing an earlier one.
    for _ in range(2):
        assert evaluate.main(["--model", str(out), "--images", "2", "--trials", "1",
                              "--edit-step", "1", "--edit-steps", "2", "--steps", "2",
                              "--json", "--record"]) == 0  # fmt: skip
    recorded = json.loads((out / "card.json").read_text())["evaluation"]
    assert recorded["held_out"]["images"] == 2 and "--record" in recorded["command"]
    assert set(recorded["edit_red_to_blue"]["blue_share_by_edit_step"]) == {"1", "2"}
    card_text = (out / "MODEL_CARD.md").read_text()
    assert card_text.count("## Evaluation") == 1 and "training time" in card_text

    # Shipped weights are listed as "midrun-demo" in every models folder.
    import midrun.demo_model as demo
    from midrun.diffusion.paths import ModelPaths

    monkeypatch.setattr(demo, "WEIGHTS", out)
    empty = ModelPaths.from_dir(tmp_path / "nothing")
    assert empty.names("checkpoints") == ["midrun-demo"]
    assert empty.find("checkpoints", "midrun-demo") == out

    # The text-to-image demo runs on whatever model is shipped: pause, edit, resume.
    from midrun.cli.demo import run_image_demo

    assert run_image_demo(tmp_path / "demo-data", device="cpu") == 0
    assert list((tmp_path / "demo-data" / "output").glob("midrun-demo_*_.png"))
    assert list((tmp_path / "demo-data" / "runs").iterdir())


def test_a_stage_refuses_a_folder_without_what_it_reads(tmp_path: Path, capsys) -> None:
    """--vae-from, --continue-unet and --finetune-decoder name what the folder lacks, before
    any data is drawn or any output written."""
    import pytest

    partial = tmp_path / "partial"
    (partial / "vae").mkdir(parents=True)
    (partial / "vae" / "config.json").write_text("{}")
    out = tmp_path / "out"
    cases = [
        (["--vae-from", str(tmp_path / "nope")], "no vae/config.json, card.json"),
        (["--vae-from", str(partial)], "no card.json"),
        (["--continue-unet", str(partial)],
         "no unet/config.json, text_encoder/config.json, card.json"),
        (["--finetune-decoder", str(tmp_path / "nope")], "no vae/config.json, card.json"),
    ]
    for args, lacks in cases:
        with pytest.raises(SystemExit) as refused:
            train.main([*args, "--out", str(out)])
        assert refused.value.code == 2
        error = capsys.readouterr().err
        assert f"{args[0]} {args[1]} is not a trained demo model folder" in error and lacks in error
    assert not out.exists()
    from midrun.demo_model import evaluate

    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--model", str(partial), "--record"])
    assert refused.value.code == 2
    assert f"--record: {partial} has no card.json" in capsys.readouterr().err
