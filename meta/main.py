"""The main job: functa-style meta-learning of ASMR vs SIREN at equal parameter count.

    python -m meta.main                 # ~6 min on 2 CPU cores: both models, same time budget
    python -m meta.main --quick         # smoke run (tiny models, a few steps; < 1 min)
    python -m meta.main --out DIR --minutes 2

Both models meta-learn on the bundled natural-image patches (``patches``, 32x32 RGB;
test patches come from photos never trained on) with the same latent size, inner
steps, batch, optimizer and the same wall-clock budget (``--minutes`` each, capped at
``--steps``). ASMR uses ``--levels`` levels of width ``--width``; SIREN has the same
depth and the width that makes its shared parameter count (network + latent map +
meta-SGD rates) closest to ASMR's. ASMR is also evaluated at the number of steps
SIREN finished, for an equal-step comparison.

Prints a table (params, MAC/pixel, meta-step images/s, test PSNR after k inner steps
at the end and at equal steps, and after 10 steps) and writes into
``OUT/run-YYYYmmdd-HHMMSS/``: ``results.json``, ``psnr.png`` (both curves),
``reconstructions.png`` (test targets, ASMR, SIREN), and one meta-train workdir per
model (checkpoints, metrics, pictures). A fresh run folder is used every time, so an
existing ``OUT`` is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    from asmr_jax.cli import seed_value
    from meta import configs

    d = configs.load("cpu")
    p = argparse.ArgumentParser(prog="python -m meta.main", description=__doc__.split("\n\n")[0],
                                epilog="Writes OUT/run-*/results.json, psnr.png, reconstructions.png, asmr/, siren/.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/main", help="output folder (a fresh run-* subfolder is created)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget per model")
    p.add_argument("--steps", type=int, default=3000, help="step cap per model")
    p.add_argument("--resolution", type=int, default=d["resolution"], help="patch side")
    p.add_argument("--width", type=int, default=d["width"], help="ASMR hidden width")
    p.add_argument("--levels", type=int, default=d["levels"], help="ASMR levels (= SIREN depth)")
    p.add_argument("--latent-dim", type=int, default=d["latent_dim"], help="latent size D")
    p.add_argument("--inner-steps", type=int, default=d["inner_steps"], help="inner steps k")
    p.add_argument("--lr-scale", type=float, default=d["lr_scale"], help="scale of the meta-SGD inner rates")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per outer step")
    p.add_argument("--lr", type=float, default=d["lr"], help="outer Adam learning rate")
    p.add_argument("--eval-every", type=int, default=100, help="test evaluation period")
    p.add_argument("--eval-images", type=int, default=64, help="test patches per evaluation")
    p.add_argument("--seed", type=seed_value, default=0, help="PRNG seed, in [0, 2^32)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, a few steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.levels, args.latent_dim, args.batch_size = 16, 3, 8, 8
        args.steps, args.minutes, args.eval_every, args.eval_images = 4, 1.0, 2, 8
    return args


def matched_siren_width(meta_asmr, depth: int, resolution: int, channels: int, latent_dim: int) -> int:
    """SIREN width (same depth) whose shared parameter count is closest to ``meta_asmr``'s."""
    from meta.train import build_meta

    target = meta_asmr.num_params()
    best = min(range(4, 4 * max(meta_asmr.model.widths) + 1),
               key=lambda w: abs(build_meta("siren", resolution, channels, w, depth=depth,
                                            latent_dim=latent_dim).num_params() - target))
    return best


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from asmr_jax.datasets import load_dataset
    from meta import functa
    from meta.train import build_meta, plot_history, train, write_grid

    run = os.path.join(args.out, time.strftime("run-%Y%m%d-%H%M%S"))
    while os.path.exists(run):
        run += "x"
    os.makedirs(run)
    train_ds = load_dataset("patches", "train", args.resolution)
    test_ds = load_dataset("patches", "test", args.resolution)
    meta_asmr = build_meta("asmr", args.resolution, 3, args.width, levels=args.levels, latent_dim=args.latent_dim)
    siren_width = matched_siren_width(meta_asmr, args.levels, args.resolution, 3, args.latent_dim)
    common = dict(dataset=train_ds, test_dataset=test_ds, resolution=args.resolution, latent_dim=args.latent_dim,
                  inner_steps=args.inner_steps, lr_scale=args.lr_scale, batch_size=args.batch_size,
                  steps=args.steps, lr=args.lr, seed=args.seed, eval_every=args.eval_every,
                  eval_images=args.eval_images, checkpoint_every=max(args.steps // 4, 1),
                  max_seconds=60.0 * args.minutes, progress=not args.no_progress)
    print(f"meta-learning on {len(train_ds)} train / {len(test_ds)} test patches of {args.resolution}x"
          f"{args.resolution} (test photos unseen), {args.minutes:g} min per model, <= {args.steps} steps")
    # SIREN first: its step count sets the equal-step evaluation of ASMR.
    results = {}
    results["siren"] = train(workdir=os.path.join(run, "siren"), model="siren", width=siren_width,
                             depth=args.levels, **common)
    n_siren = results["siren"].step
    results["asmr"] = train(workdir=os.path.join(run, "asmr"), model="asmr", width=args.width, levels=args.levels,
                            eval_at=(n_siren,), **common)

    k = args.inner_steps
    rows, table = {}, []
    for name in ("asmr", "siren"):
        r = results[name]
        m = r.metrics
        at_equal = next((h.get(f"test_psnr_{k}") for h in r.history if h["step"] == n_siren), None)
        rows[name] = {
            "width": r.meta.model.widths[0], "depth": r.meta.model.depth, "shared_params": m["shared_params"],
            "network_params": m["network_params"], "mac_per_pixel": m["mac_per_pixel"],
            "images_per_second": m["images_per_second"], "steps": r.step, "status": r.status,
            "train_seconds": m["train_seconds"], f"test_psnr_{k}": m["test_psnr"].get(str(k)),
            "test_psnr_10": m["test_psnr"].get("10"), f"test_psnr_{k}_at_step_{n_siren}": at_equal,
        }
    hdr = (f"{'model':>6} {'width':>5} {'params':>8} {'MAC/px':>9} {'img/s':>7} {'steps':>6} "
           f"{'PSNR k=' + str(k):>9} {'@' + str(n_siren) + ' steps':>10} {'PSNR 10':>8}")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    table.append(hdr)
    for name, r in rows.items():
        table.append(f"{name:>6} {r['width']:>5} {r['shared_params']:>8,} {r['mac_per_pixel']:>9,.0f} "
                     f"{r['images_per_second']:>7.1f} {r['steps']:>6} {fmt(r[f'test_psnr_{k}']):>9} "
                     f"{fmt(r[f'test_psnr_{k}_at_step_{n_siren}']):>10} {fmt(r['test_psnr_10']):>8}")
    speedup = rows["asmr"]["images_per_second"] / rows["siren"]["images_per_second"]
    table.append(f"ASMR meta-step throughput / SIREN: {speedup:.1f}x (medians, measured in this run, one after the "
                 f"other on this machine)")
    print("\n".join(table))

    # pictures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("asmr", "siren"):
        plot_history(results[name].history, None, k, 10, label=f"{name} ", ax=axes[0])
        t = [h["step"] for h in results[name].history]
        sec = results[name].metrics["train_seconds"] / max(len(t), 1)
        pts = [(h["step"] * sec, h[f"test_psnr_{k}"]) for h in results[name].history if f"test_psnr_{k}" in h]
        axes[1].plot(*zip(*pts), "o-", ms=3, label=f"{name} test, k={k}")
    axes[0].set_title("PSNR vs outer step")
    axes[1].set_xlabel("training time (s)")
    axes[1].set_ylabel("PSNR (dB)")
    axes[1].set_title("test PSNR vs wall-clock time")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(run, "psnr.png"), dpi=120)
    plt.close(fig)
    targets = test_ds.get(np.arange(min(8, len(test_ds))))
    grid = [targets]
    for name in ("asmr", "siren"):
        r = results[name]
        lat, _ = functa.fit_latents(r.meta, r.params, targets)
        grid.append(functa.render_latents(r.meta, r.params, lat))
    write_grid(os.path.join(run, "reconstructions.png"), grid)

    summary = {"args": vars(args), "train_images": len(train_ds), "test_images": len(test_ds),
               "equal_step": n_siren, "asmr_over_siren_images_per_second": speedup, "models": rows,
               "table": table}
    from asmr_jax.io import write_json

    write_json(os.path.join(run, "results.json"), summary)
    print(f"wrote {run}/results.json, psnr.png (curves), reconstructions.png (rows: targets, ASMR, SIREN)")
    bad = [n for n, r in results.items() if r.status == "diverged"]
    if bad:
        print(f"diverged: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
