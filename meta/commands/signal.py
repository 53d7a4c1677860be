"""``asmr fit``, ``asmr render`` (one signal, one network), and the flag helpers the
other command groups share."""

from __future__ import annotations

import argparse
import json
import os
import time


def seed_value(text: str) -> int:
    """argparse type of ``--seed``: an integer in ``[0, 2^32)`` (what a PRNG key takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^32), got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^32), got {value}")
    return value


def parse_shape(text: str, ndim: int) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``: ``ndim`` positive sizes, else a ``ValueError`` naming them."""
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--shape must be {ndim} comma-separated sizes, got {text!r}") from None
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"--shape must be {ndim} positive sizes (one per axis), got {text!r}")
    return shape


def add_model_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("asmr", "siren", "ffn", "mfn", "wire", "kilonerf", "loe", "ngp"),
                   default="asmr",
                   help="network family (default asmr; the baselines: siren, ffn, mfn (FourierNet), wire, "
                        "kilonerf, loe, ngp (Instant-NGP hash grid); --width/--depth size them)")
    g.add_argument("--levels", type=int, default=None,
                   help="ASMR levels = layers (default 4; bases picked by auto_bases)")
    g.add_argument("--bases", default=None,
                   help="ASMR bases, coarse to fine: '4,4,4,8' for every axis or '4,4,4,8;4,4,6,8' per axis")
    g.add_argument("--depth", type=int, default=None,
                   help="layers incl. output for the non-ASMR families (default: --levels or 4)")
    g.add_argument("--width", type=int, default=256, help="hidden width (default 256)")
    g.add_argument("--w0", type=float, default=30.0, help="sine frequency w0 (default 30)")
    g.add_argument("--modulator", choices=("linear", "nonlinear"), default="linear",
                   help="ASMR modulator kind (default linear, as in the paper)")


def add_distributed_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("multi-process (jax.distributed)")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (run the same command in every process; outputs on a file "
                        "system all see; process 0 writes): the group comes from the cluster environment (TPU "
                        "pod, SLURM, Open MPI), or from the three flags below, or from ASMR_COORDINATOR, "
                        "ASMR_NUM_PROCESSES, ASMR_PROCESS_ID")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    g.add_argument("--num-processes", type=int, default=None, help="number of processes")
    g.add_argument("--process-id", type=int, default=None, help="this process's index")
    g.add_argument("--distributed-timeout", type=int, default=300,
                   help="seconds to wait for the other processes and the coordinator (default 300)")


def start_distributed(args):
    """``jax.distributed`` initialization for ``--distributed`` (before any other JAX use)."""
    if getattr(args, "distributed", False):
        from asmr_jax import sharding

        if args.distributed_timeout < 1:
            raise ValueError(f"--distributed-timeout must be >= 1 seconds, got {args.distributed_timeout}")
        sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        timeout_s=args.distributed_timeout)


def model_from_args(args, shape, channels):
    from asmr_jax import coords, models

    bases = coords.parse_bases(args.bases) if args.bases else None
    if args.model == "asmr" and bases is None and args.levels is not None and args.levels > coords.max_levels(shape):
        raise ValueError(f"a signal of shape {tuple(shape)} supports at most {coords.max_levels(shape)} levels with "
                         f"every base >= 2 (a level of base 1 sees coordinate 0 only), got --levels {args.levels}")
    return models.build(args.model, shape, channels, width=args.width, depth=args.depth, levels=args.levels,
                        bases=bases, w0=args.w0, modulator=args.modulator)


def check_fit_flags(args):
    """Refuses meaningless training flags before any work (named, with what was expected)."""
    import math

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 points (omit it for a full-batch fit), got {args.batch_size}")
    if args.crop is not None and args.crop < 1:
        raise ValueError(f"--crop must be >= 1 pixels, got {args.crop}")
    for flag, value in (("--lr", args.lr), ("--w0", args.w0)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive finite number, got {value}")


def cmd_fit(args) -> int:
    import jax

    from asmr_jax import data, fit, io, macs, models

    check_fit_flags(args)

    signal = data.load_signal(args.source, kind=args.kind)
    if args.crop:
        signal = data.crop(signal, args.crop)
    model = model_from_args(args, signal.shape, signal.channels)
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    cost = macs.count(model)
    print(f"{model.kind}: shape {signal.shape} x {signal.channels}, {model.num_params():,} params, "
          f"{cost.paper_macs:,.2f} MAC/sample" + (f", bases {model.bases}" if model.kind == "asmr" else ""))
    result = fit.fit(model, signal.data, args.steps, lr=args.lr, cosine=args.cosine, batch_size=args.batch_size,
                     key=jax.random.key(args.seed), progress=not args.no_progress, keep_best=not args.keep_last)
    render = models.jitted_render(model)
    recon = result.reconstruction
    t_render = macs.median_time(lambda: render(result.params).block_until_ready(), repeats=5)
    summary = {
        "source": args.source, "model": model.config(), "params": model.num_params(),
        "mac_per_sample": cost.paper_macs, "render_mac_per_sample": cost.render_macs,
        "psnr": result.psnr, "ssim": result.ssim, "steps": args.steps, "fit_seconds": result.fit_seconds,
        "step_seconds": result.step_seconds, "render_seconds": t_render, "best_step": result.best_step,
    }
    with io.atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        io.save_model(os.path.join(tmp, "checkpoint"), model, result.params,
                      extra={"signal": {"kind": signal.kind, "sample_rate": signal.sample_rate}})
        out_file = data.write_signal(tmp, recon, signal.kind, sample_rate=signal.sample_rate or 16000)
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(summary, f, indent=2)
    ssim = "-" if result.ssim is None else f"{result.ssim:.4f}"
    print(f"{'params':>10} {'MAC/sample':>11} {'PSNR dB':>8} {'SSIM':>7} {'fit s':>8} {'step ms':>8} {'render ms':>10}")
    print(f"{model.num_params():>10,} {cost.paper_macs:>11,.1f} {result.psnr:>8.2f} {ssim:>7} "
          f"{result.fit_seconds:>8.1f} {1e3 * result.step_seconds:>8.2f} {1e3 * t_render:>10.2f}")
    if result.best_step != args.steps:
        print(f"kept the parameters after step {result.best_step} (best PSNR seen; --keep-last keeps the final ones)")
    print(f"wrote {os.path.join(args.out, os.path.basename(out_file))}, {args.out}/checkpoint, {args.out}/metrics.json")
    return 0


def cmd_render(args) -> int:
    import numpy as np

    from asmr_jax import data, io, models

    model, params, record = io.load_model(args.checkpoint)
    kind = record.get("signal", {}).get("kind") or {1: "audio", 2: "image", 3: "video"}[model.ndim]
    suffix = {"image": ".png", "audio": ".wav", "video": ".gif"}[kind]
    out = os.path.abspath(args.out)
    stem, ext = os.path.splitext(os.path.basename(out))
    if ext.lower() not in (suffix, ""):
        raise ValueError(f"a {kind} is written as {suffix}; got --out {args.out}")
    target = os.path.join(os.path.dirname(out), stem + suffix)
    if os.path.exists(target) and not args.overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    shape = parse_shape(args.shape, model.ndim) if args.shape else None
    if args.bases is not None:
        from asmr_jax import coords

        if model.kind != "asmr":
            raise ValueError(f"--bases is for an ASMR checkpoint; this is a {model.kind}, which renders any --shape")
        bases = coords.normalize_bases(coords.parse_bases(args.bases), None, model.levels, model.ndim)
        y = model.render(params, bases=bases)  # the padded grid of these bases
        if shape is not None:
            if any(s > p for s, p in zip(shape, y.shape)):
                raise ValueError(f"--shape {shape} exceeds the grid {y.shape[:-1]} of --bases {args.bases}")
            y = y[tuple(slice(0, s) for s in shape)]
    elif shape is not None:
        if model.kind == "asmr":
            if any(s > p for s, p in zip(shape, model.padded_shape)):
                raise ValueError(f"--shape {shape} exceeds the fitted grid {model.padded_shape}; for a denser "
                                 f"grid pass --bases with {model.levels} levels per axis (e.g. a larger finest "
                                 f"base: {','.join(map(str, model.bases[0][:-1] + (2 * model.bases[0][-1],)))})")
            y = model.render(params, crop=False)[tuple(slice(0, s) for s in shape)]
        else:
            y = model.render(params, shape=shape)
    else:
        y = models.jitted_render(model)(params)
    y = np.asarray(y)
    elapsed = time.perf_counter() - t0
    os.makedirs(os.path.dirname(out), exist_ok=True)
    sr = record.get("signal", {}).get("sample_rate") or 16000
    written = data.write_signal(os.path.dirname(out), y, kind, name=stem, sample_rate=sr)
    print(f"rendered {model.kind} {y.shape} in {elapsed:.3f} s -> {written}")
    return 0


def add_commands(sub):
    p = sub.add_parser("fit", help="fit one signal (image, audio, video) with ASMR or SIREN",
                       description="Fit one signal and write its reconstruction, checkpoint and metrics.")
    p.add_argument("source", help="image/WAV/GIF/.npy file, frame folder, or bundled name (camera, astronaut, ...)")
    p.add_argument("--kind", choices=("image", "audio", "video"), default=None,
                   help="what a .npy array holds (default by layout: [T] audio, [H,W] or [H,W,C<=4] image, "
                        "[T,H,W] or [T,H,W,C] video)")
    add_model_flags(p)
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps (paper: 10000; default 1000)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    g.add_argument("--cosine", action="store_true", help="cosine-decay the rate to 1e-5")
    g.add_argument("--batch-size", type=int, default=None,
                   help="points per step (block sampler); default full batch when the signal fits")
    g.add_argument("--seed", type=seed_value, default=0, help="PRNG seed, in [0, 2^32)")
    g.add_argument("--keep-last", action="store_true",
                   help="keep the final parameters; by default a full-batch fit keeps the best PSNR seen")
    g.add_argument("--crop", type=int, default=None, help="center-crop every spatial axis to this size first")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out (only once the new one is complete)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("render", help="render a saved model to PNG/WAV/GIF",
                       description="Render a checkpoint written by `asmr fit` (or any saved model).")
    p.add_argument("checkpoint", help="checkpoint folder (OUT/checkpoint)")
    p.add_argument("--out", required=True, help="output file: .png (image), .wav (audio), .gif (video); "
                                                "the suffix is added when missing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--shape", default=None, help="comma-separated render size (SIREN: any; ASMR: <= the padded "
                                                 "grid of its bases, or of --bases)")
    p.add_argument("--bases", default=None, help="ASMR: render the field on the grid of these bases (same number "
                                                 "of levels; e.g. a larger finest base samples it more densely)")
    p.set_defaults(func=cmd_render)
