"""``asmr meta-train``, ``asmr meta-encode``, ``asmr meta-decode``."""

from __future__ import annotations

import argparse

from meta import config as config_lib
from meta.commands.signal import add_distributed_flags, start_distributed


def config_from_args(args):
    """The run's ConfigDict: ``--config`` file, then ``--set`` overrides, then explicit flags."""
    from meta import configs

    config = configs.load(args.config, args.set or ())
    for field in config:
        value = getattr(args, field, None)  # flags are parsed by their field's parser
        if value is None:
            continue
        config[field] = float(value) if isinstance(config[field], float) else value
    return config


def cmd_train(args) -> int:
    start_distributed(args)
    import jax

    from meta import configs
    from meta.train import train

    config = config_from_args(args)
    run = configs.to_config(config)
    if args.memory_estimate:
        est = configs.memory_estimate(config)
        if not est:
            print(f"the {jax.default_backend()} backend reports no memory analysis")
            return 1
        print(f"XLA memory plan of one meta step (batch {config.batch_size} on one {jax.default_backend()} "
              f"device): {est['peak'] / 2**30:.2f} GiB peak (arguments {est['arguments'] / 2**30:.2f}, "
              f"temporaries {est['temporaries'] / 2**30:.2f} GiB)")
        return 0
    result = train(run, args.workdir, resume=args.resume or args.resume_step is not None,
                   resume_step=args.resume_step, progress=not args.no_progress)
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
                    "reconstructions.png}.")
    p.add_argument("--config", default="cpu", help="FILE[:ARG]: a config file or a name in meta/configs/ "
                                                   "(default cpu)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field (repeatable)")
    p.add_argument("--workdir", required=True, help="output folder (checkpoints, metrics, pictures)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--resume-step", type=int, default=None,
                   help="with --resume: continue from this checkpoint step instead (later ones are deleted)")
    p.add_argument("--memory-estimate", action="store_true",
                   help="print XLA's memory plan of one meta step and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("config fields (default: the config file's value)")
    for field in config_lib.fields():
        meta = field.metadata
        if not meta["cli"]:
            continue
        flag = "--" + field.name.replace("_", "-")
        text = meta["help"] + ("" if meta["functa"] is None else f" (functa: {meta['functa']})")
        if isinstance(field.default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            g.add_argument(flag, type=meta["parse"] or type(field.default), default=None, help=text)
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
