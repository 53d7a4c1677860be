"""``asmr meta-train``, ``asmr meta-encode``, ``asmr meta-decode``."""

from __future__ import annotations

import argparse

from asmr_jax.cli import add_distributed_flags, start_distributed

# Help for the meta-train fields; every field of meta.train.train gets a flag, typed by
# its default (its value comes from the config file unless the flag is given).
FIELD_HELP = {
    "dataset": "'patches' (bundled photo patches), 'lfw' (bundled faces), 'folder:DIR' (your images) or a "
               "TFDS name (cifar10, celeb_a, ...) prepared under --data-dir",
    "data_dir": "TFDS data directory (array_record files)",
    "resolution": "image side (square)",
    "model": "network family: asmr or siren",
    "width": "hidden width",
    "depth": "SIREN layers incl. output (default: --levels)",
    "levels": "ASMR levels = layers (also SIREN depth when --depth is not given)",
    "bases": "ASMR bases, e.g. '2,2,2,4' (overrides --levels)",
    "w0": "sine frequency",
    "latent_dim": "latent values per image (D)",
    "inner_steps": "inner SGD steps (k)",
    "lr_scale": "multiplies the meta-SGD rates in the inner step (functa: 1); without meta-SGD, the inner rate",
    "modulate_shift": "latent drives FiLM shifts (functa: on)",
    "modulate_scale": "latent drives FiLM scales (functa's CelebA config: off)",
    "latent_init_scale": "start latent ~ U(-s, s), drawn once and shared (functa: 0)",
    "l2_weight": "weight of sum(latent^2) in the inner and outer loss (functa: 0)",
    "noise_std": "Gaussian noise on fitted latents before the outer loss (functa: 0)",
    "functa_init": "hidden biases 0 and output bias 0.5 at init, as functa",
    "meta_sgd": "learn per-dimension inner rates (functa: on)",
    "spatial": "latent grid, cells per axis ('8' or '8,8'; default: one global latent, as functa). ASMR: the "
               "cells of a coarse level; SIREN: must divide the image. --latent-dim is the total (grid x channels)",
    "spatial_kernel": "side of the convolution mapping the latent grid to modulations (odd; 1: per cell)",
    "batch_size": "images per outer step (global, over all devices and processes)",
    "steps": "total outer steps",
    "lr": "outer Adam learning rate (functa: 3e-6 for 500k steps)",
    "clip": "global-norm clip of the outer gradient (functa: none)",
    "lr_decay": "outer rate schedule: none (constant, as functa) or cosine (lr -> lr/100 over --steps)",
    "seed": "init and data-order seed",
    "remat": "recompute each inner step in the backward pass (less memory, slower)",
    "microbatch": "sum gradients over chunks of this many images (less memory, same result)",
    "eval_every": "test evaluation period (steps)",
    "eval_images": "test images used by evaluations",
    "eval_more_steps": "also report test PSNR after this many inner steps",
    "checkpoint_every": "checkpoint period",
    "keep": "checkpoints kept",
    "log_every": "steps between metric fetches from the device",
    "prefetch": "batches loaded ahead in the background",
    "max_seconds": "stop (and checkpoint) after this much training time",
}
def latent_grid(text: str):
    """``'8'`` -> 8 (every axis), ``'8,4'`` -> (8, 4)."""
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected cells per axis like 8 or 8,8, got {text!r}") from None
    return parts[0] if len(parts) == 1 else parts


NONE_TYPES = {"spatial": latent_grid, "depth": int, "data_dir": str, "bases": str, "microbatch": int,
              "max_seconds": float, "clip": float,
              "levels": int}
SKIP = ("eval_at",)


def config_from_args(args):
    """The run's ConfigDict: ``--config`` file, then ``--set`` overrides, then explicit flags."""
    from asmr_jax import coords
    from meta import configs

    config = configs.load(args.config, args.set or ())
    for field in config:
        value = getattr(args, field, None)
        if value is None:
            continue
        if field == "bases":
            value = coords.parse_bases(value)
        config[field] = float(value) if isinstance(config[field], float) else value
    return config


def cmd_train(args) -> int:
    start_distributed(args)
    import jax

    from meta import configs
    from meta.train import train

    config = config_from_args(args)
    kwargs = configs.to_kwargs(config)
    if args.memory_estimate:
        est = configs.memory_estimate(config)
        if not est:
            print(f"the {jax.default_backend()} backend reports no memory analysis")
            return 1
        print(f"XLA memory plan of one meta step (batch {config.batch_size} on one {jax.default_backend()} "
              f"device): {est['peak'] / 2**30:.2f} GiB peak (arguments {est['arguments'] / 2**30:.2f}, "
              f"temporaries {est['temporaries'] / 2**30:.2f} GiB)")
        return 0
    result = train(workdir=args.workdir, resume=args.resume or args.resume_step is not None,
                   resume_step=args.resume_step, progress=not args.no_progress, **kwargs)
    m = result.metrics
    if jax.process_index() == 0:
        psnr = ", ".join(f"{k} steps {v:.2f} dB" for k, v in m["test_psnr"].items() if v is not None)
        ips = "-" if m["images_per_second"] is None else f"{m['images_per_second']:.1f}"
        print(f"{result.status} at step {result.step}: test PSNR {psnr}; {ips} images/s; "
              f"wrote {result.workdir}/{{metrics.json,psnr.png,reconstructions.png,checkpoints/}}")
    return 0 if result.status != "diverged" else 1


def cmd_encode(args) -> int:
    from meta.functaset import encode_split

    arrays = encode_split(args.checkpoint, split=args.split, out=args.out, dataset=args.dataset,
                          data_dir=args.data_dir, steps=args.steps, limit=args.limit, overwrite=args.overwrite,
                          progress=not args.no_progress, step=args.step)
    lat, psnr = arrays["latents"], arrays["psnr"]
    print(f"encoded {len(lat)} images of split {args.split!r} to latents {lat.shape}: "
          f"mean PSNR {psnr.mean():.2f} dB (min {psnr.min():.2f}, max {psnr.max():.2f}) -> {args.out}")
    return 0


def cmd_decode(args) -> int:
    from meta.functaset import decode_functaset

    images = decode_functaset(args.file, args.ckpt, out_dir=args.out, limit=args.limit, overwrite=args.overwrite)
    print(f"rendered {len(images)} images {images.shape[1:]} -> {args.out}/ (NNNNN.png, grid.png)")
    return 0


def add_commands(sub):
    from meta import configs

    p = sub.add_parser(
        "meta-train", help="meta-learn a functa (shared weights + latent map + meta-SGD rates)",
        description="Meta-learn shared network weights, a latent-to-modulation map and per-dimension rates so "
                    "that k SGD steps on a per-image latent fit a new image (Functa, Dupont et al. 2022). "
                    "Settings come from --config (a Python file with get_config(arg); shipped: "
                    f"{', '.join(configs.shipped())}), then --set key=value, then the flags below. "
                    "Writes WORKDIR/{meta.json, checkpoints/, history.json, metrics.json, psnr.png, "
                    "reconstructions.png}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="cpu", help="FILE[:ARG]: a config file or a name in meta/configs/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field (repeatable)")
    p.add_argument("--workdir", required=True, help="output folder (checkpoints, metrics, pictures)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--resume-step", type=int, default=None,
                   help="with --resume: continue from this checkpoint step instead (later ones are deleted)")
    p.add_argument("--memory-estimate", action="store_true",
                   help="print XLA's memory plan of one meta step and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("config fields (default: the config file's value)")
    for field, default in configs.defaults().items():
        if field in SKIP:
            continue
        flag = "--" + field.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=FIELD_HELP.get(field))
        else:
            kind = NONE_TYPES.get(field, str) if default is None else type(default)
            g.add_argument(flag, type=kind, default=None, help=FIELD_HELP.get(field))
    add_distributed_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "meta-encode", help="fit the latent of every image of a split (a functaset .npz)",
        description="Fit latents of a dataset split with a meta-trained checkpoint and write an .npz that numpy "
                    "alone reads: latents [n, D] float32, psnr [n], indices [n], labels [n] (-1 = none), config "
                    "(JSON string), format, version.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="meta-train workdir (latest checkpoint) or exported meta folder")
    p.add_argument("--split", default="test", help="dataset split")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--dataset", default=None, help="dataset (default: the one trained on)")
    p.add_argument("--data-dir", default=None, help="TFDS data directory (default: the one trained with)")
    p.add_argument("--steps", type=int, default=None, help="inner steps (default: the checkpoint's k)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a workdir (default: the latest)")
    p.add_argument("--limit", type=int, default=None, help="encode only the first N images")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "meta-decode", help="render a functaset's latents back to PNG images",
        description="Render every latent of a functaset with the checkpoint's shared weights into "
                    "OUT/NNNNN.png plus OUT/grid.png (written atomically).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", help="functaset .npz written by meta-encode")
    p.add_argument("--ckpt", required=True, help="the checkpoint the functaset was encoded with")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--limit", type=int, default=None, help="render only the first N latents")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.set_defaults(func=cmd_decode)
