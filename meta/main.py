"""The main job: functa-style meta-learning, global against spatial latents, ASMR against SIREN.

    python -m meta.main                 # ~10 min on 2 CPU cores: four models, the same minutes each
    python -m meta.main --quick         # smoke run (tiny models, a few seconds each)
    python -m meta.main --out DIR --minutes 3 --models asmr,asmr-spatial

Four models meta-learn on the bundled natural-image patches (``patches``, 32x32 RGB;
test patches come from photos never trained on) with the same latent size ``D``, inner
steps, batch and wall-clock budget (``--minutes`` of training each, compilation
excluded): ASMR and SIREN, each with one global latent (functa) and with a spatial one
(a ``--grid`` x ``--grid`` grid of ``D / grid^2`` values per cell, mapped to each cell's
modulations by a ``--kernel``-sided convolution). SIREN has ASMR's depth
and the width that makes its shared parameter count closest to global ASMR's. Every run
uses its whole budget: the outer rate decays by a cosine over the number of steps a
short timing probe says fits in it.

Prints a table (params, MAC/pixel, meta-step images/s, steps, test PSNR and SSIM after k
inner steps on every test patch, PSNR after 10 steps) and writes into
``OUT/run-YYYYmmdd-HHMMSS/``: ``results.json``, ``psnr.png`` (test PSNR against training
time), ``reconstructions.png`` (rows: test targets, then each model), and one meta-train
workdir per model. A fresh run folder is used every time, so an existing ``OUT`` is
never overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

MODELS = ("asmr", "asmr-spatial", "siren", "siren-spatial")


def parse_args(argv=None):
    from meta import configs
    from meta.commands.signal import seed_value

    d = configs.load("cpu")
    p = argparse.ArgumentParser(prog="python -m meta.main", description=__doc__.split("\n\n")[0],
                                epilog="Writes OUT/run-*/results.json, psnr.png, reconstructions.png and a "
                                       "workdir per model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/main", help="output folder (a fresh run-* subfolder is created)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--minutes", type=float, default=2.0, help="training time budget per model")
    p.add_argument("--probe-seconds", type=float, default=10.0,
                   help="timing run that plans each model's steps (the cosine's length)")
    p.add_argument("--resolution", type=int, default=d["resolution"], help="patch side")
    p.add_argument("--width", type=int, default=d["width"], help="ASMR hidden width")
    p.add_argument("--levels", type=int, default=d["levels"], help="ASMR levels (= SIREN depth)")
    p.add_argument("--latent-dim", type=int, default=256, help="latent size D (the total, for spatial latents too)")
    p.add_argument("--grid", type=int, default=4, help="cells per axis of the spatial latents")
    p.add_argument("--kernel", type=int, default=1,
                   help="side of the spatial latents' latent-to-modulation convolution (1: per cell)")
    p.add_argument("--inner-steps", type=int, default=d["inner_steps"], help="inner steps k")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per outer step")
    p.add_argument("--lr", type=float, default=None,
                   help="outer Adam learning rate of every model (cosine-decayed to lr/100); default per network: "
                        + ", ".join(f"{k} {v:g}" for k, v in LR.items()))
    p.add_argument("--eval-every", type=int, default=500, help="test evaluation period in steps")
    p.add_argument("--eval-images", type=int, default=32, help="test patches per evaluation during training")
    p.add_argument("--seed", type=seed_value, default=0, help="PRNG seed, in [0, 2^32)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: tiny models, {QUICK_STEPS} steps or {60 * QUICK_MINUTES:g} s each, whichever "
                        "ends first (no timing probe)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        p.error(f"--models takes {', '.join(MODELS)}; got {args.models}")
    for name in ("minutes", "probe_seconds"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.quick:
        args.width, args.levels, args.latent_dim, args.grid, args.batch_size = 16, 3, 16, 2, 8
        args.minutes, args.probe_seconds, args.eval_every, args.eval_images = QUICK_MINUTES, 2.0, 20, 64
    return args


QUICK_STEPS, QUICK_MINUTES = 30, 0.02  # the most outer steps and minutes per model of a --quick run
# Outer rate per network. ASMR makes ~25x SIREN's steps in the same minutes; at 3e-4 its
# spatial runs dipped or diverged (experiments/README.md, "Quality ceiling"), at 1e-4 they
# did not. SIREN's few hundred steps keep the cpu preset's 3e-4.
LR = {"asmr": 1e-4, "siren": 3e-4}


def model_settings(args, channels: int) -> dict:
    """``name -> train() keywords`` of each model: network, width and latent layout."""
    from asmr_jax.models import match_width
    from meta.config import TrainConfig

    base = TrainConfig(resolution=args.resolution, latent_dim=args.latent_dim)
    asmr = base.replace(model="asmr", width=args.width, levels=args.levels).meta_model(channels)
    siren_width = match_width(lambda w: base.replace(model="siren", width=w, depth=args.levels)
                              .meta_model(channels).num_params(), asmr.num_params())
    nets = {"asmr": dict(model="asmr", width=args.width, levels=args.levels),
            "siren": dict(model="siren", width=siren_width, depth=args.levels)}
    return {name: {**nets[name.split("-")[0]], "spatial": args.grid if name.endswith("spatial") else None,
                   "spatial_kernel": args.kernel} for name in args.models}


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from asmr_jax.datasets import load_dataset
    from asmr_jax.io import write_json
    from meta import inference
    from meta.config import TrainConfig
    from meta.train import plan_steps, train, write_grid

    run = os.path.join(args.out, time.strftime("run-%Y%m%d-%H%M%S"))
    while os.path.exists(run):
        run += "x"
    os.makedirs(run)
    train_ds = load_dataset("patches", "train", args.resolution)
    test_ds = load_dataset("patches", "test", args.resolution)
    test_images = test_ds.get(np.arange(len(test_ds)))
    settings = model_settings(args, train_ds.channels)
    common = TrainConfig(resolution=args.resolution, latent_dim=args.latent_dim, inner_steps=args.inner_steps,
                         batch_size=args.batch_size, lr_decay="cosine", seed=args.seed,
                         eval_every=args.eval_every, eval_images=args.eval_images)
    budget = 60.0 * args.minutes
    print(f"meta-learning on {len(train_ds)} train / {len(test_ds)} test patches of {args.resolution}x"
          f"{args.resolution} (test photos unseen), {args.minutes:g} min per model, latent {args.latent_dim}, "
          f"models {', '.join(settings)}")
    results, rows = {}, {}
    for name, net in settings.items():
        config = common.replace(**net, lr=LR[net["model"]] if args.lr is None else args.lr)
        steps = QUICK_STEPS if args.quick else plan_steps(config, budget, args.probe_seconds, data=train_ds,
                                                          test_data=test_ds)
        print(f"{name}: {steps} steps planned for {budget:.0f} s", flush=True)
        config = config.replace(steps=steps, max_seconds=1.1 * budget, checkpoint_every=max(steps // 4, 1))
        results[name] = train(config, os.path.join(run, name), data=train_ds, test_data=test_ds,
                              progress=not args.no_progress)
        r, m = results[name], results[name].metrics
        ev = inference.evaluate(r.meta, r.params, test_images)
        rows[name] = {"latent": "global" if net["spatial"] is None else f"{args.grid}x{args.grid}", "lr": config.lr,
                      "width": r.meta.model.widths[0], "depth": r.meta.model.depth,
                      "shared_params": m["shared_params"], "mac_per_pixel": m["mac_per_pixel"],
                      "images_per_second": m["images_per_second"], "steps": r.step, "status": r.status,
                      "train_seconds": m["budget_seconds"], "test_psnr": ev["psnr"], "test_ssim": ev["ssim"],
                      "test_psnr_10": ev["psnr_more"], "recon": ev.pop("recon")}

    k = args.inner_steps
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    table = [f"{'model':>13} {'latent':>6} {'width':>5} {'params':>8} {'MAC/px':>7} {'img/s':>7} {'steps':>6} "
             f"{'min':>4} {'PSNR k=' + str(k):>9} {'SSIM':>6} {'PSNR 10':>8}"]
    for name, r in rows.items():
        table.append(f"{name:>13} {r['latent']:>6} {r['width']:>5} {r['shared_params']:>8,} "
                     f"{r['mac_per_pixel']:>7,.0f} {r['images_per_second'] or float('nan'):>7.1f} {r['steps']:>6} "
                     f"{r['train_seconds'] / 60:>4.1f} {fmt(r['test_psnr']):>9} {r['test_ssim']:>6.3f} "
                     f"{fmt(r['test_psnr_10']):>8}")
    best = {fam: max((n for n in rows if n.startswith(fam)), key=lambda n: rows[n]["test_psnr"], default=None)
            for fam in ("asmr", "siren")}
    headline = None
    if best["asmr"] and best["siren"]:
        headline = rows[best["asmr"]]["test_psnr"] - rows[best["siren"]]["test_psnr"]
        table.append(f"best ASMR ({best['asmr']}) - best SIREN ({best['siren']}): {headline:+.2f} dB test PSNR at "
                     f"k={k}, {args.minutes:g} min each, {len(test_images)} test patches")
    print("\n".join(table))

    plot_curves(results, os.path.join(run, "psnr.png"), k)
    write_grid(os.path.join(run, "reconstructions.png"), [test_images[:8]] + [r["recon"][:8] for r in rows.values()])
    for r in rows.values():
        r.pop("recon")
    write_json(os.path.join(run, "results.json"), {
        "args": vars(args), "train_images": len(train_ds), "test_images": len(test_ds), "models": rows,
        "best": best, "best_asmr_minus_best_siren_db": headline, "table": table})
    print(f"wrote {run}/results.json, psnr.png, reconstructions.png (rows: targets, {', '.join(rows)})")
    bad = [n for n, r in results.items() if r.status == "diverged"]
    if bad:
        print(f"diverged: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def plot_curves(results, path, k: int):
    """Test PSNR (k inner steps) against training time, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asmr_jax.io import atomic_write

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results.items():
        sec = r.metrics["train_seconds"] / max(r.step, 1)
        pts = [(h["step"] * sec, h[f"test_psnr_{k}"]) for h in r.history if f"test_psnr_{k}" in h]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"test PSNR, k={k} (dB)")
    ax.set_title("functa on 32x32 photo patches, equal minutes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
