"""Quality at equal wall clock: global against spatial latents, ASMR against SIREN.

Each variant ``BACKBONE:D:GRID[:KERNEL]`` is meta-trained on the bundled 32x32 photo
patches (or ``--dataset lfw --resolution 25``: the bundled faces) for ``--minutes`` of
training (the compression ladder's protocol: the cpu config, Adam ``--lr`` (3e-4)
decaying by a cosine over a step count planned from a 20 s timing probe; resumable,
and a finished run is reused), then every held-out test image gets
its latent by ``k = 3`` inner steps and PSNR / SSIM are measured on the render (before
any quantization). ``GRID`` is ``global`` (one latent of ``D`` values, functa) or the
latent grid's cells per axis (``8``: an 8x8 grid of ``D / 64`` values each); ``KERNEL``
is the side of the latent-to-modulation convolution (default 3).

    python -m experiments.quality_ceiling --variants asmr:256:global,asmr:256:8 --minutes 20
    python -m experiments.quality_ceiling --quick          # two tiny variants, seconds each

Runs go one after another (each alone on the machine is the protocol); the rows are
added to ``experiments/results/quality_ceiling.{json,md}`` (a variant measured again
replaces its row).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

from experiments.common import RESULTS_DIR, check_config, markdown_table

NAME = "quality_ceiling"


def get_config(arg: str | None = None) -> dict:
    """Defaults of the run; ``"quick"``: two tiny variants."""
    check_config(arg, "quick")
    if arg == "quick":
        return {"variants": "asmr:16:global,asmr:16:2:1", "minutes": 0.05, "test_images": 8}
    return {"variants": "asmr:256:global,asmr:256:8", "minutes": 20.0, "test_images": 10**9}


def parse_variant(text: str) -> dict:
    """``"asmr:256:8:1:width=256+modulate_scale=True"`` -> ``{backbone, latent, spatial,
    kernel, fields}`` (``spatial`` None for ``global``; ``fields``: other config fields)."""
    parts = text.split(":")
    if len(parts) not in (3, 4, 5) or parts[0] not in ("asmr", "siren"):
        raise ValueError(f"variant {text!r}: expected BACKBONE:D:GRID[:KERNEL[:FIELD=VALUE+...]], e.g. asmr:256:8 "
                         f"or siren:256:global")
    try:
        dim = int(parts[1])
        grid = None if parts[2] == "global" else int(parts[2])
        kernel = int(parts[3]) if len(parts) >= 4 and parts[3] else 3
    except ValueError:
        raise ValueError(f"variant {text!r}: D, GRID and KERNEL must be integers (GRID may be 'global')") from None
    fields = {}
    for item in filter(None, parts[4].split("+") if len(parts) == 5 else []):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"variant {text!r}: extra fields look like width=256+modulate_scale=True")
        fields[key] = value
    return {"backbone": parts[0], "latent": dim, "spatial": grid, "kernel": kernel, "fields": fields}


def config_spec(v: dict, base: str, dataset: str = "patches", resolution: int = 32) -> str:
    """The meta-training config of a variant, as ``rate_distortion`` names configs."""
    extra = [f"{k}={val}" for k, val in v["fields"].items()]
    if (dataset, resolution) != ("patches", 32):
        extra = [f"dataset={dataset}", f"resolution={resolution}"] + extra
    if v["spatial"] is not None:
        extra = [f"spatial={v['spatial']}", f"spatial_kernel={v['kernel']}"] + extra
    if not extra:
        return base
    return base + ("," if ":" in base else ":") + ",".join(extra)


def evaluate(path: str, images: np.ndarray) -> dict:
    """PSNR and SSIM (means over ``images``) after the checkpoint's ``k`` inner steps, PSNR after 10."""
    from meta import checkpoint, inference

    meta, params = checkpoint.load(path)
    ev = inference.evaluate(meta, params, images)
    return {"psnr_k3": ev["psnr"], "psnr_k10": ev["psnr_more"], "ssim": ev["ssim"],
            "shared_params": int(meta.num_params()), "recon": ev["recon"]}


def run(args, picture: str) -> list[dict]:
    from asmr_jax.datasets import load_dataset
    from experiments import rate_distortion as rd
    from meta.train import write_grid

    test = load_dataset(args.dataset, "test", args.resolution)
    images = test.get(np.arange(min(len(test), args.test_images)))
    rows, pictures = [], [images[:8]]
    for text in args.variants:
        v = parse_variant(text)
        ns = SimpleNamespace(config=config_spec(v, args.config, args.dataset, args.resolution), lr=args.lr,
                             lr_decay="cosine", eval_every=args.eval_every, budget_minutes=args.minutes,
                             workdir=args.workdir, steps=args.steps)
        path = rd.checkpoint(ns, v["backbone"], v["latent"])
        with open(os.path.join(path, rd.BUDGET)) as f:
            budget = json.load(f)
        ev = evaluate(path, images)
        pictures.append(ev.pop("recon")[:8])
        row = {**v, "dataset": args.dataset, "lr": args.lr, "minutes": budget["seconds"] / 60,
               "budget_minutes": args.minutes, "fixed_steps": args.steps, "steps": budget["steps"], **ev,
               "images": len(images),
               "checkpoint": path, "command": command(args, [text])}
        print(f"{text}: {row['steps']} steps in {row['minutes']:.1f} min, test PSNR {row['psnr_k3']:.2f} dB, "
              f"SSIM {row['ssim']:.3f}", flush=True)
        rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    write_grid(os.path.join(args.out, picture), pictures)
    return rows


def command(args, variants) -> str:
    """The command line that measures ``variants`` as ``args`` did."""
    lr = "" if args.lr == 3e-4 else f" --lr {args.lr:g}"
    data = "" if args.dataset == "patches" else f" --dataset {args.dataset} --resolution {args.resolution}"
    steps = "" if getattr(args, "steps", None) is None else f" --steps {args.steps}"
    return (f"python -m experiments.quality_ceiling --variants {','.join(variants)} --minutes {args.minutes:g}{steps}"
            f"{lr}{data}")


def picture_name(dataset: str, minutes: float = 2.0) -> str:
    """Reconstructions of the last run on ``dataset`` at ``minutes`` per variant: targets, then one
    row per variant (the two-minute pictures keep the short names)."""
    parts = [] if dataset == "patches" else [dataset.replace(":", "_").replace("/", "_")]
    parts += [] if minutes == 2 else [f"{minutes:g}min"]
    return "_".join([NAME, *parts]) + ".png"


def choose_picture(args, pictures: dict) -> str:
    """``--picture``, or :func:`picture_name`; when that picture was made by other variants, the
    name gets the command's hash, so no run overwrites another's picture."""
    if args.picture:
        return args.picture if args.picture.endswith(".png") else args.picture + ".png"
    name, cmd = picture_name(args.dataset, args.minutes), command(args, args.variants)
    if pictures.get(name, cmd) != cmd:
        name = f"{name[:-len('.png')]}_{hashlib.sha256(cmd.encode()).hexdigest()[:8]}.png"
    return name


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with those of the same variant and budget replaced by ``new``."""
    key = lambda r: (r.get("dataset", "patches"), r["backbone"], r["latent"], r["spatial"], r["kernel"],  # noqa: E731
                     json.dumps(r.get("fields", {})),
                     r["budget_minutes"], r.get("lr", 3e-4), r.get("fixed_steps"))
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def _other(row: dict) -> str:
    """The row's changed fields, and its note if it has one."""
    parts = [f"{k}={v}" for k, v in row.get("fields", {}).items()]
    if row.get("fixed_steps"):
        parts.append(f"{row['fixed_steps']} steps fixed")
    if "note" in row:
        parts.append(f"({row['note']})")
    return " ".join(parts) or "-"


def markdown(rows: list[dict]) -> str:
    headers = ["data", "backbone", "D", "latent", "kernel", "other", "lr", "minutes", "steps", "params", "PSNR k=3",
               "SSIM", "PSNR k=10"]
    body = [[r.get("dataset", "patches"), r["backbone"], r["latent"],
             "global" if r["spatial"] is None else f"{r['spatial']}x{r['spatial']}",
             "-" if r["spatial"] is None else r["kernel"],
             _other(r), f"{r.get('lr', 3e-4):g}",
             f"{r['minutes']:.1f}", r["steps"], r["shared_params"],
             f"{r['psnr_k3']:.2f}", f"{r['ssim']:.3f}",
             f"{r['psnr_k10']:.2f}" if "psnr_k10" in r else "-"] for r in rows]
    return markdown_table(headers, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="asmr:256:global,asmr:256:8",
                   help="comma-separated BACKBONE:D:GRID[:KERNEL] (GRID: global or cells per axis)")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per variant")
    p.add_argument("--config", default="cpu", help="meta-training config (meta/configs)")
    p.add_argument("--dataset", default="patches", help="training and test images (patches: photo patches, "
                                                        "lfw: faces; any name meta-train takes)")
    p.add_argument("--resolution", type=int, default=32, help="image side (lfw: 25)")
    p.add_argument("--lr", type=float, default=3e-4, help="outer Adam rate (cosine-decayed to lr/100)")
    p.add_argument("--steps", type=int, default=None, help="outer steps of every variant (equal steps in place of "
                   "equal minutes: no timing probe; --minutes still caps each run)")
    p.add_argument("--eval-every", type=int, default=1000, help="evaluation / checkpoint period in steps")
    p.add_argument("--test-images", type=int, default=10**9, help="test patches measured (default all)")
    p.add_argument("--workdir", default="outputs/quality", help="checkpoints (reused if present)")
    p.add_argument("--out", default=RESULTS_DIR, help="results folder")
    p.add_argument("--quick", action="store_true", help="two tiny variants (a smoke run)")
    p.add_argument("--picture", default=None, help="file name of the reconstructions picture (default: by data and "
                   "minutes, with the command's hash when other variants made that picture)")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.quick:
        args.variants, args.minutes, args.config, args.test_images = "asmr:16:global,asmr:16:2:1", 0.05, "cpu", 8
    args.variants = [v for v in args.variants.split(",") if v]
    for v in args.variants:
        parse_variant(v)  # refuse a typo before anything trains
    t0 = time.perf_counter()
    path = os.path.join(args.out, f"{NAME}.json")
    old, pictures = [], {}
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        old, pictures = saved["rows"], saved.get("pictures", {})
    picture = choose_picture(args, pictures)
    rows = merge(old, run(args, picture))
    pictures[picture] = command(args, args.variants)
    with open(path, "w") as f:
        json.dump({"rows": rows, "pictures": pictures, "machine": f"{os.cpu_count()} CPU cores"}, f, indent=2)
    md = markdown(rows) + "\nPictures (targets, then one row per variant, in the command's order):\n\n" + "".join(
        f"- `{name}`: `{cmd}`\n" for name, cmd in sorted(pictures.items()))
    with open(os.path.join(args.out, f"{NAME}.md"), "w") as f:
        f.write("Rows from `python -m experiments.quality_ceiling` (each row's command is in the JSON); held-out "
                "test images (32x32 photo patches unless the data column says lfw: 25x25 faces), k = 3 inner "
                "steps (k = 10 in the last column: more steps at encode time), before quantization.\n\n" + md)
    print(md)
    print(f"wrote {path} and {NAME}.md, {picture} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
