"""Grades the demo model with the checker, through midrun's own KSampler and VAE nodes.

* held-out accuracy: images for (colour, shape, background) triples never seen in
  training, 20 euler steps; correct when the checker reads the requested shape and colour
  (and the same over triples seen in training, to show the gap);
* mid-run edit: "red" -> "blue" swapped into the running sampler at step ``--edit-step``
  (and, for the dependence, at other steps); correct when the image reads blue;
* the median wall time of a 20-step generation (text encoding, sampling, decoding);
* the VAE ceiling: held-out renders encoded and decoded by the model's VAE, checked the
  same way (what the diffusion model could score at best through this VAE).

    python -m midrun.demo_model.evaluate --model midrun/demo_model/weights --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from midrun.demo_model import checker, shapes
from midrun.demo_model.train import command_line
from midrun.diffusion.images import to_pil
from midrun.diffusion.ksampler import KSamplerStep
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.nodes.comfy_impl import implementations


class Generator:
    def __init__(self, model_dir: Path, cfg: float, steps: int, sampler: str = "euler",
                 scheduler: str = "normal") -> None:  # fmt: skip
        models = Path(tempfile.mkdtemp()) / "models"
        (models / "checkpoints").mkdir(parents=True)
        (models / "checkpoints" / "demo").symlink_to(model_dir.resolve())
        self.runtime = DiffusionRuntime.create(models, device="cpu")
        self.nodes = implementations(self.runtime)
        self.model, self.clip, self.vae = self.nodes["CheckpointLoaderSimple"]("demo")
        self.node = KSamplerStep()
        self.cfg, self.steps, self.sampler, self.scheduler = cfg, steps, sampler, scheduler
        self.negative = self.clip.encode("")

    def start(self, caption: str, seed: int) -> dict[str, Any]:
        inputs = {
            "model": self.model,
            "seed": seed,
            "steps": self.steps,
            "cfg": self.cfg,
            "sampler_name": self.sampler,
            "scheduler": self.scheduler,
            "positive": self.clip.encode(caption),
            "negative": self.negative,
            "latent_image": self.nodes["EmptyLatentImage"](shapes.SIZE, shapes.SIZE, 1)[0],
            "denoise": 1.0,
        }
        return self.node.start(inputs)

    def finish(self, state: dict[str, Any], edit_at: int | None = None,
               edit: dict[str, Any] | None = None) -> checker.Verdict:  # fmt: skip
        step = 0
        while not self.node.done(state):
            if edit is not None and step == edit_at:
                state = self.node.swap(state, edit)
            state = self.node.step(state)
            step += 1
        latent = self.node.finish(state)[0]
        image = self.nodes["VAEDecode"](latent, self.vae)[0][0]
        return checker.classify(to_pil(image))

    def generate(self, caption: str, seed: int) -> checker.Verdict:
        return self.finish(self.start(caption, seed))


def held_out_accuracy(gen: Generator, count: int, seed: int, seen: bool = False
                      ) -> dict[str, Any]:  # fmt: skip
    """Cycles through the held-out triples (with ``seen``, through the training triples
    instead: the same figure for combinations the model was trained on, for comparison)."""
    rng = random.Random(seed)
    train, held = shapes.split()
    pool = train if seen else held
    correct = 0
    misses: dict[str, int] = {}
    for i in range(count):
        colour, shape, background = pool[i % len(pool)]
        caption = f"a {colour} {shape} on a {background} background"
        verdict = gen.generate(caption, rng.randrange(2**32))
        if (verdict.shape, verdict.colour) == (shape, colour):
            correct += 1
        else:
            key = f"{colour} {shape} -> {verdict.colour} {verdict.shape}"
            misses[key] = misses.get(key, 0) + 1
    return {"images": count, "correct": correct, "accuracy": correct / count,
            "misses": dict(sorted(misses.items(), key=lambda kv: -kv[1])[:10])}  # fmt: skip


def vae_ceiling(gen: Generator, count: int, seed: int) -> dict[str, Any]:
    from midrun.diffusion.images import from_pil

    correct = 0
    for spec in shapes.specs(seed, count, held_out=True):
        pixels, _ = from_pil(shapes.render(spec))
        latent = gen.nodes["VAEEncode"](pixels, gen.vae)[0]
        verdict = checker.classify(to_pil(gen.nodes["VAEDecode"](latent, gen.vae)[0][0]))
        correct += (verdict.shape, verdict.colour) == (spec.shape, spec.colour)
    return {"images": count, "accuracy": correct / count}


def edit_success(gen: Generator, trials: int, edit_steps: list[int], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    results: dict[str, float] = {}
    for edit_at in edit_steps:
        blue = 0
        for _ in range(trials):
            shape = rng.choice(shapes.SHAPES)
            background = rng.choice(list(shapes.BACKGROUNDS))
            state = gen.start(f"a red {shape} on a {background} background", rng.randrange(2**32))
            swap = {"positive": gen.clip.encode(f"a blue {shape} on a {background} background")}
            blue += gen.finish(state, edit_at, swap).colour == "blue"
        results[str(edit_at)] = blue / trials
    return {"trials": trials, "blue_share_by_edit_step": results}


def timing(gen: Generator, runs: int) -> dict[str, float]:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        gen.generate("a green star on a white background", i)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path(__file__).parent / "weights"))
    parser.add_argument("--images", type=int, default=102)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--edit-step", type=int, default=8)
    parser.add_argument("--edit-steps", default="4,8,12")
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--scheduler", default="normal")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="keep the report in the model folder's card")  # fmt: skip
    parser.add_argument("--only-vae", action="store_true", help="just the VAE ceiling")
    args = parser.parse_args(argv)
    if args.record and not (Path(args.model) / "card.json").is_file():  # before any work
        parser.error(f"--record: {args.model} has no card.json to keep the report in")
    gen = Generator(Path(args.model), args.cfg, args.steps, scheduler=args.scheduler)
    ceiling = vae_ceiling(gen, 200, args.seed)
    if args.only_vae:
        print(json.dumps({"vae_ceiling": ceiling}))
        return 0
    edit_steps = sorted({args.edit_step, *map(int, args.edit_steps.split(","))})
    report = {
        "held_out": held_out_accuracy(gen, args.images, args.seed),
        "seen_in_training": held_out_accuracy(gen, args.images, args.seed, seen=True),
        "edit_red_to_blue": edit_success(gen, args.trials, edit_steps, args.seed),
        "generation_20_steps": timing(gen, 9),
        "vae_ceiling": ceiling,
        "cfg": args.cfg,
        "sampler": "euler",
        "scheduler": args.scheduler,
        "steps": args.steps,
    }
    print(json.dumps(report, indent=None if args.json else 1))
    if args.record:
        record(Path(args.model), report, command_line("midrun.demo_model.evaluate", argv))
    return 0


def record(folder: Path, report: dict[str, Any], command: str) -> None:
    """Keeps ``report`` in the folder's card (``card.json`` and an Evaluation section of
    ``MODEL_CARD.md``, replaced on each run), with the ``command`` that measured it."""
    card_path = folder / "card.json"
    card = json.loads(card_path.read_text("utf-8"))
    card["evaluation"] = {"command": command, **report}
    card_path.write_text(json.dumps(card, indent=1), "utf-8")
    held, edits = report["held_out"], report["edit_red_to_blue"]
    by_step = ", ".join(f"step {k}: {v:.0%}" for k, v in edits["blue_share_by_edit_step"].items())
    lines = [
        "## Evaluation",
        "",
        f"`{command}` ({report['steps']} {report['sampler']} steps, {report['scheduler']}"
        f" schedule, cfg {report['cfg']:g}):",
        "",
        f"- held-out triples: {held['accuracy']:.1%} of {held['images']} images read as the"
        f" requested shape and colour (misses: {held['misses'] or 'none'})",
        f"- triples seen in training: {report['seen_in_training']['accuracy']:.1%}",
        f"- red -> blue edit, share read blue over {edits['trials']} trials: {by_step}",
        f"- 20-step generation, median: {report['generation_20_steps']['median_s']:.2f} s",
        f"- VAE ceiling (held-out renders encoded and decoded): "
        f"{report['vae_ceiling']['accuracy']:.1%}",
        "",
    ]
    card_md = folder / "MODEL_CARD.md"
    text = card_md.read_text("utf-8").split("## Evaluation")[0].rstrip("\n")
    card_md.write_text(text + "\n\n" + "\n".join(lines), "utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
