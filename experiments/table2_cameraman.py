"""Paper Table 2: ultra-low-MAC fitting of Cameraman (512x512 gray), SIREN-3/4 vs ASMR-3/4.

Every model is measured in its own subprocess of this one run (so peak memory is its
own), one after another on the same machine:

* params, MAC/pixel (paper convention) and the MACs our factorized render computes;
* PSNR/SSIM after ``--steps`` full-batch Adam steps (lr 1e-4) for all four models, and
  after ``--long-steps`` for the ASMR models (the paper's 10,000);
* median train-step time, median full-image render time, peak RSS;
* render-time ratios SIREN-4 / ASMR-4 on Cameraman and on a 512x768 RGB grid with the
  paper's Kodak bases, and the 8192x8192 RGB render of a 6-level width-512 ASMR.

    python -m experiments.table2_cameraman --cosine --long-lr 5e-4 --long-models ASMR-4 --seeds 0,1,2
                                                           # ~30 min on 2 cores
    python -m experiments.table2_cameraman --renders-only  # re-time the renders of an earlier run
    python -m experiments.table2_cameraman --smoke         # seconds

Results: experiments/results/table2_cameraman.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from experiments.common import (
    RESULTS_DIR,
    check_config,
    child_command,
    child_env,
    peak_rss_mib,
    render_latency,
    write_results,
)

CONFIGS = {
    "SIREN-3": dict(kind="siren", depth=3),
    "SIREN-4": dict(kind="siren", depth=4),
    "ASMR-3": dict(kind="asmr", bases=(8, 8, 8)),
    "ASMR-4": dict(kind="asmr", bases=(4, 4, 4, 8)),
}
PAPER = {  # the paper's Table 2: params (K), MACs (K), PSNR (dB)
    "SIREN-3": (66.8, 66.0, 28.62), "SIREN-4": (132.6, 132.0, 32.37),
    "ASMR-3": (67.8, 1.29, 31.44), "ASMR-4": (134.0, 1.35, 37.84),
}


def run_one(name: str, steps: int, size: int, width: int, cosine: bool = False, seed: int = 0,
            lr: float = 1e-4) -> dict:
    """Fits one model (in this process) and measures it."""
    import jax
    import numpy as np

    from asmr_jax import data, fit, macs, models

    img = data.bundled_image("camera")
    if size != 512:
        img = data.crop(img, size)
    cfg = dict(CONFIGS[name])
    kind = cfg.pop("kind")
    if kind == "asmr" and size != 512:
        cfg = {"levels": len(cfg.pop("bases"))}
    model = models.build(kind, img.shape, 1, width=width, **cfg)
    cost = macs.count(model)
    res = fit.fit(model, img.data, steps, lr=lr, cosine=cosine, progress=False, key=jax.random.key(seed),
                  chunk=max(1, min(100, steps // 10)))
    t_render = render_latency(model, res.params, 5)
    return {
        "name": name, "steps": steps, "cosine": cosine, "seed": seed, "lr": lr, "best_step": res.best_step,
        "params": model.num_params(), "mac_paper": cost.paper_macs,
        "mac_render": cost.render_macs, "transcendentals": cost.transcendentals,
        "psnr": res.psnr, "ssim": res.ssim, "step_s": res.step_seconds, "render_s": t_render,
        "fit_s": res.fit_seconds, "peak_rss_mib": peak_rss_mib(),
        "history": res.history[:: max(1, len(res.history) // 20)], "bases": getattr(model, "bases", None),
        "psnr_finite": bool(np.isfinite(res.psnr)),
    }


def run_render_ratio(shape, channels, bases, width: int, repeats: int) -> dict:
    """Median render time of SIREN-4 and ASMR-4 (untrained weights: time does not depend on them)."""
    import jax

    from asmr_jax import macs, models

    asmr = models.build("asmr", shape, channels, width=width, bases=bases)
    siren = models.build("siren", shape, channels, width=width, depth=4)
    out = {"shape": list(shape), "channels": channels}
    for tag, model in (("asmr", asmr), ("siren", siren)):
        out[f"{tag}_render_s"] = render_latency(model, model.init(jax.random.key(0)), repeats)
        out[f"{tag}_mac_paper"] = macs.count(model).paper_macs
        out[f"{tag}_mac_render"] = macs.count(model).render_macs
    out["ratio"] = out["siren_render_s"] / out["asmr_render_s"]
    return out


def run_big(size: int, width: int) -> dict:
    """Tiled render of a 6-level ASMR on a size x size RGB grid: time and peak memory."""
    import jax

    from asmr_jax import models

    bases = (4, 4, 4, 4, 4, 8) if size == 8192 else None
    model = models.build("asmr", (size, size), 3, width=width, bases=bases, levels=6)
    params = model.init(jax.random.key(0))
    t0 = time.perf_counter()
    y = model.render_tiled(params)
    elapsed = time.perf_counter() - t0
    return {"shape": list(y.shape), "width": width, "bases": [list(b) for b in model.bases],
            "seconds": elapsed, "peak_rss_mib": peak_rss_mib(), "output_mib": y.nbytes / 2**20}


def subprocess_json(args: list[str]) -> dict:
    proc = subprocess.run(child_command("experiments.table2_cameraman", *args), env=child_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(res: dict) -> str:
    lines = ["| model | params | MAC/px (paper conv.) | MAC/px (our render) | steps | lr | seed | PSNR dB | SSIM | "
             "step ms | render ms | peak RSS MiB | paper PSNR |", "|" + "---|" * 13]
    for row in res["rows"]:
        ssim = "-" if row["ssim"] is None else f"{row['ssim']:.4f}"
        lr = f"{row.get('lr', 1e-4):g}" + (" cosine" if row.get("cosine") else "")
        lines.append(
            f"| {row['name']} | {row['params']:,} | {row['mac_paper']:,.2f} | {row['mac_render']:,.2f} | "
            f"{row['steps']} | {lr} | {row.get('seed', 0)} | {row['psnr']:.2f} | {ssim} | {1e3 * row['step_s']:.1f} | "
            f"{1e3 * row['render_s']:.2f} | {row['peak_rss_mib']:.0f} | {PAPER[row['name']][2]} |")
    lines.append("")
    for name, psnrs in res.get("long_summary", {}).items():
        lines.append(f"- {name}, {res['long_steps']} steps over seeds {res['seeds']}: median "
                     f"{sorted(psnrs)[len(psnrs) // 2]:.2f} dB, best {max(psnrs):.2f} dB (paper {PAPER[name][2]})")
    for key, r in res["render_ratios"].items():
        lines.append(f"- render {key} {r['shape']}x{r['channels']}: SIREN-4 {1e3 * r['siren_render_s']:.1f} ms, "
                     f"ASMR-4 {1e3 * r['asmr_render_s']:.2f} ms, ratio **{r['ratio']:.1f}x**")
    if "step_ratio" in res:
        lines.append(f"- train step SIREN-4 / ASMR-4 at {res['steps']} steps: **{res['step_ratio']:.1f}x**")
    if res.get("big"):
        b = res["big"]
        lines.append(f"- tiled render {b['shape']} width {b['width']}: {b['seconds']:.1f} s, "
                     f"peak RSS {b['peak_rss_mib']:.0f} MiB (output alone {b['output_mib']:.0f} MiB)")
    return "\n".join(lines) + "\n"


def get_config(arg: str | None = None) -> dict:
    """Every setting's default (the paper's); ``"smoke"``: a 64x64 crop, a few steps, width 16."""
    check_config(arg, "smoke")
    if arg == "smoke":
        return {"size": 64, "steps": 5, "long_steps": 10, "width": 16, "ratio_grids": ("smoke",), "big": 64}
    return {"size": 512, "steps": 50, "long_steps": 10000, "width": 256, "ratio_grids": ("cameraman", "kodak"),
            "big": 8192}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="steps for every model, side by side (default 50)")
    p.add_argument("--long-steps", type=int, default=None, help="steps for the ASMR models (paper: 10000)")
    p.add_argument("--long-models", default="ASMR-4,ASMR-3", help="models also run for --long-steps")
    p.add_argument("--cosine", action="store_true",
                   help="cosine-decay the rate to 1e-5 in the --long-steps runs (the official code's option)")
    p.add_argument("--long-lr", type=float, default=1e-4, help="peak Adam rate of the --long-steps runs (paper 1e-4)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the --long-steps runs (default 0)")
    p.add_argument("--width", type=int, default=None, help="network width (default 256)")
    p.add_argument("--big", type=int, default=None, help="size of the tiled render check (default 8192; 0 to skip)")
    p.add_argument("--smoke", action="store_true", help="tiny crop, few steps, no big render")
    p.add_argument("--out", default=RESULTS_DIR, help="results folder")
    p.add_argument("--renders-only", action="store_true",
                   help="re-measure only the render ratios and the big render, updating an earlier run's results")
    p.add_argument("--one", nargs=5, metavar=("NAME", "STEPS", "SIZE", "SEED", "LR"), help=argparse.SUPPRESS)
    p.add_argument("--ratio", nargs=1, metavar="WHICH", help=argparse.SUPPRESS)
    p.add_argument("--big-one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    cfg = get_config("smoke" if args.smoke else None)
    for key in ("steps", "long_steps", "width", "big"):  # flags not given
        if getattr(args, key) is None:
            setattr(args, key, cfg[key])
    if args.one:  # child process: one model
        name, steps, size, seed, lr = args.one
        print(json.dumps(run_one(name, int(steps), int(size), args.width, args.cosine, int(seed), float(lr))))
        return 0
    if args.ratio:
        which = args.ratio[0]
        if which == "cameraman":
            r = run_render_ratio((512, 512), 1, (4, 4, 4, 8), args.width, 7)
        elif which == "kodak":
            r = run_render_ratio((512, 768), 3, ((4, 4, 4, 8), (4, 4, 6, 8)), args.width, 5)
        else:  # smoke
            r = run_render_ratio((64, 64), 1, (4, 4, 4), 32, 3)
        print(json.dumps(r))
        return 0
    if args.big_one:
        print(json.dumps(run_big(args.big_one, 512 if args.big_one == 8192 else 32)))
        return 0

    size, steps, long_steps = cfg["size"], args.steps, args.long_steps
    width = ["--width", str(args.width)]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    name = "table2_cameraman" + ("_smoke" if args.smoke else "")
    if args.renders_only:
        path = os.path.join(args.out, name + ".json")
        if not os.path.exists(path):
            raise SystemExit(f"--renders-only updates an earlier run's results, but {path} does not exist")
        with open(path) as f:
            res = json.load(f)
        res.pop("environment", None)
    else:
        res = {"steps": steps, "long_steps": long_steps, "size": size, "seeds": seeds, "rows": [],
               "render_ratios": {}, "long_summary": {}}
        run_fits(res, args, size, width, seeds)
    for which in cfg["ratio_grids"]:
        res["render_ratios"][which] = subprocess_json(["--ratio", which, *width])
    if args.big:
        res["big"] = subprocess_json(["--big-one", str(args.big)])
    table = markdown(res)
    paths = write_results(args.out, name, res, table)
    print(table)
    print(f"wrote {' and '.join(paths)}")
    return 0


def run_fits(res: dict, args, size: int, width: list, seeds: list) -> None:
    """The paper-length runs (per seed), then every model side by side for ``res['steps']``."""
    steps, long_steps = res["steps"], res["long_steps"]
    for name in [n for n in args.long_models.split(",") if n]:
        if long_steps <= steps:
            continue
        for seed in seeds:
            row = subprocess_json(["--one", name, str(long_steps), str(size), str(seed), str(args.long_lr), *width]
                                  + ["--cosine"] * args.cosine)
            print(f"{name} seed {seed}: {long_steps} steps, PSNR {row['psnr']:.2f} dB", flush=True)
            res["rows"].append(row)
            res["long_summary"].setdefault(name, []).append(row["psnr"])
    side = []
    for name in CONFIGS:
        row = subprocess_json(["--one", name, str(steps), str(size), "0", "1e-4", *width])
        print(f"{name}: {steps} steps, PSNR {row['psnr']:.2f} dB, step {1e3 * row['step_s']:.1f} ms, "
              f"render {1e3 * row['render_s']:.2f} ms", flush=True)
        side.append(row)
    res["rows"] = side + res["rows"]
    by = {r["name"]: r for r in side}
    res["step_ratio"] = by["SIREN-4"]["step_s"] / by["ASMR-4"]["step_s"]


if __name__ == "__main__":
    sys.exit(main())
