"""``asmr meta-train``, ``asmr meta-encode``, ``asmr meta-decode``."""

from __future__ import annotations

import argparse

from meta import defaults


def cmd_train(args) -> int:
    from asmr_jax import coords
    from meta.train import train

    bases = coords.parse_bases(args.bases) if args.bases else None
    result = train(
        workdir=args.workdir, dataset=args.dataset, data_dir=args.data_dir, resolution=args.resolution,
        model=args.model, width=args.width, depth=args.depth, levels=args.levels, bases=bases, w0=args.w0,
        latent_dim=args.latent_dim, inner_steps=args.inner_steps, inner_lr=args.inner_lr,
        batch_size=args.batch_size, steps=args.steps, lr=args.lr, seed=args.seed, resume=args.resume,
        eval_every=args.eval_every, eval_images=args.eval_images, eval_more_steps=args.eval_more_steps,
        checkpoint_every=args.checkpoint_every, keep=args.keep, max_seconds=args.max_seconds,
        progress=not args.no_progress)
    m = result.metrics
    psnr = ", ".join(f"{k} steps {v:.2f} dB" for k, v in m["test_psnr"].items() if v is not None)
    print(f"{result.status} at step {result.step}: test PSNR {psnr}; {m['images_per_second']:.1f} images/s; "
          f"wrote {result.workdir}/{{metrics.json,psnr.png,reconstructions.png,checkpoints/}}")
    return 0 if result.status != "diverged" else 1


def cmd_encode(args) -> int:
    from meta.functaset import encode_split

    arrays = encode_split(args.checkpoint, split=args.split, out=args.out, dataset=args.dataset,
                          data_dir=args.data_dir, steps=args.steps, limit=args.limit, overwrite=args.overwrite,
                          progress=not args.no_progress)
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
    d = defaults.TRAIN
    p = sub.add_parser(
        "meta-train", help="functa-style meta-learning of ASMR/SIREN over an image dataset",
        description="Meta-learn shared ASMR/SIREN weights, a latent->shift map and meta-SGD rates so that "
                    "k SGD steps on a per-image latent fit a new image (Functa, Dupont et al. 2022). "
                    "Writes WORKDIR/{meta.json, checkpoints/, history.json, metrics.json, psnr.png, "
                    "reconstructions.png}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=d["dataset"],
                   help="'patches' (bundled photo patches), 'lfw' (bundled faces), or a TFDS name "
                        "(cifar10, celeb_a, ...) prepared under --data-dir")
    g.add_argument("--data-dir", default=None, help="TFDS data directory (array_record files)")
    g.add_argument("--resolution", type=int, default=d["resolution"], help="image side (square)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("asmr", "siren"), default=d["model"], help="network family")
    g.add_argument("--width", type=int, default=d["width"], help="hidden width")
    g.add_argument("--depth", type=int, default=None, help="SIREN layers incl. output (default: --levels)")
    g.add_argument("--levels", type=int, default=d["levels"], help="ASMR levels = layers (also SIREN depth "
                   "when --depth is not given)")
    g.add_argument("--bases", default=None, help="ASMR bases, e.g. '2,2,2,4' (overrides --levels)")
    g.add_argument("--w0", type=float, default=30.0, help="sine frequency")
    g = p.add_argument_group("meta-learning")
    g.add_argument("--latent-dim", type=int, default=d["latent_dim"], help="latent values per image (D)")
    g.add_argument("--inner-steps", type=int, default=d["inner_steps"], help="inner SGD steps (k)")
    g.add_argument("--inner-lr", type=float, default=d["inner_lr"],
                   help="base inner rate on the per-pixel MSE, times the meta-SGD rates in [0, 1] "
                        "(functa uses 1e-2 with a 500k-step schedule; see experiments/notes/meta.md)")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per outer step")
    g.add_argument("--steps", type=int, default=d["steps"], help="total outer steps")
    g.add_argument("--lr", type=float, default=d["lr"], help="outer Adam learning rate")
    g.add_argument("--seed", type=int, default=0, help="init and data-order seed")
    g = p.add_argument_group("run")
    g.add_argument("--workdir", required=True, help="output folder (checkpoints, metrics, pictures)")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    g.add_argument("--eval-every", type=int, default=d["eval_every"], help="test evaluation period (steps)")
    g.add_argument("--eval-images", type=int, default=64, help="test images used by evaluations")
    g.add_argument("--eval-more-steps", type=int, default=10, help="also report test PSNR after this many steps")
    g.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="checkpoint period")
    g.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    g.add_argument("--max-seconds", type=float, default=None, help="stop (and checkpoint) after this much time")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
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
