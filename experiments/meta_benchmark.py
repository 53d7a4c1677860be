"""Functa-style meta-learning benchmark: ASMR-functa vs SIREN-functa at equal parameters.

    python experiments/meta_benchmark.py --quick            # ~3 min: 32x32, latent 64
    python experiments/meta_benchmark.py                    # 32x32 and 64x64, latent 64..512
    python experiments/meta_benchmark.py --train-seconds 120 --reference

For every resolution and latent size, ASMR (``--width``, ``--levels``) and a SIREN of
the same depth whose width gives the closest shared parameter count are meta-trained
on the bundled natural-image patches (k = 3 inner steps, batch 16) for the same
wall-clock budget (after compilation; at least 3 steps), one after the other in
fresh subprocesses. Reported per row:
shared params, MAC/pixel, meta-step images/s (median over the steps after the first),
outer steps done, test PSNR after 3 inner steps (first 64 test patches, photos never
trained on), and peak memory (``memory_stats()["peak_bytes_in_use"]`` where the backend
has it, else the subprocess's max RSS). ``--reference`` adds timing-only rows at
DeepMind functa's CPU reference configs (SIREN width 256, depth 4 and 6, 32x32,
batch 16) and their equal-parameter ASMR counterparts.

Writes ``experiments/results/meta_benchmark.json`` and ``.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REFERENCE = {  # functa on a 2-core CPU, batch 16, 3 inner steps (seconds per meta step)
    (256, 4, 32): 5.6,
    (256, 6, 32): 9.7,
}


def run_one(cfg: dict) -> dict:
    """One configuration in this process; returns the measured row."""
    import resource

    import jax
    import numpy as np

    from asmr_jax import macs
    from asmr_jax.datasets import load_dataset
    from meta import functa
    from meta.train import build_meta

    res = cfg["resolution"]
    meta = build_meta(
        cfg["model"],
        res,
        3,
        cfg["width"],
        depth=cfg["depth"],
        levels=cfg["depth"],
        latent_dim=cfg["latent_dim"],
        inner_steps=3,
        inner_lr=cfg["inner_lr"],
    )
    train = load_dataset("patches", "train", res)
    test_ds = load_dataset("patches", "test", res)
    test = test_ds.get(np.arange(min(64, len(test_ds))))
    params = meta.init(jax.random.key(0))
    opt = functa.make_optimizer(cfg["lr"])
    state = opt.init(params)
    step = functa.make_meta_step(meta, opt)
    bs = cfg["batch_size"]
    times, t_start, n = [], time.perf_counter(), 0
    while True:
        imgs = train.get(train.batch_indices(n, bs))
        t0 = time.perf_counter()
        params, state, m = step(params, state, imgs)
        loss = float(m["loss"])
        times.append(time.perf_counter() - t0)
        n += 1
        if not np.isfinite(loss):
            break
        if n == 1:  # the budget starts after compilation
            t_start = time.perf_counter()
        elapsed = time.perf_counter() - t_start
        if n >= cfg["min_steps"] and (elapsed > cfg["train_seconds"] or n >= cfg["max_steps"]):
            break
    psnr = None
    if cfg["train_seconds"] > 0:
        psnr = float(np.mean(functa.fit_latents(meta, params, test, steps=3)[1]))
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peak, how = stats["peak_bytes_in_use"], "device peak_bytes_in_use"
    else:
        peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS"
    sec = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {
        **cfg,
        "shared_params": meta.num_params(),
        "network_params": meta.model.num_params(),
        "mac_per_pixel": macs.count(meta.model).paper_macs,
        "step_seconds": sec,
        "images_per_second": bs / sec,
        "compile_and_first_step_seconds": times[0],
        "steps": n,
        "final_loss": loss,
        "test_psnr_3": psnr,
        "peak_memory_gib": peak / 2**30,
        "memory_measure": how,
    }


def spawn(cfg: dict) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", json.dumps(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"config {cfg} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="32x32, latent 64, 20 s per model")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    p.add_argument("--latents", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument(
        "--latents-64", type=int, nargs="+", default=None, help="latent sizes at resolution 64 (default: --latents)"
    )
    p.add_argument("--width", type=int, default=128, help="ASMR width (SIREN width is matched)")
    p.add_argument("--levels", type=int, default=4, help="ASMR levels = SIREN depth")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--inner-lr", type=float, default=300.0)
    p.add_argument("--train-seconds", type=float, default=30.0, help="wall-clock training budget per model")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--reference", action="store_true", help="add functa reference timing rows (3 steps each)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "meta_benchmark.json"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    if args.quick:
        args.resolutions, args.latents, args.train_seconds = [32], [64], 20.0

    from meta.main import matched_siren_width
    from meta.train import build_meta

    base = dict(batch_size=args.batch_size, lr=args.lr, inner_lr=args.inner_lr, max_steps=args.max_steps)
    configs = []
    for res in args.resolutions:
        for d in (args.latents_64 or args.latents) if res == 64 else args.latents:
            asmr = build_meta("asmr", res, 3, args.width, levels=args.levels, latent_dim=d)
            sw = matched_siren_width(asmr, args.levels, res, 3, d)
            for model, w in (("asmr", args.width), ("siren", sw)):
                configs.append(
                    dict(
                        base,
                        model=model,
                        width=w,
                        depth=args.levels,
                        resolution=res,
                        latent_dim=d,
                        train_seconds=args.train_seconds,
                        min_steps=3,
                        kind="train",
                    )
                )
    if args.reference:
        for w, depth, res in REFERENCE:  # ASMR of the same width and depth: ~equal params
            for model in ("siren", "asmr"):
                configs.append(
                    dict(
                        base,
                        model=model,
                        width=w,
                        depth=depth,
                        resolution=res,
                        latent_dim=256,
                        train_seconds=0.0,
                        min_steps=3,
                        max_steps=3,
                        kind="timing",
                        functa_seconds=REFERENCE[(w, depth, res)] if model == "siren" else None,
                    )
                )
    rows = []
    t0 = time.time()
    for cfg in configs:
        row = spawn(cfg)
        rows.append(row)
        print(
            f"[{time.time() - t0:6.0f}s] {row['model']:>5} w{row['width']} d{row['depth']} {row['resolution']}px "
            f"D={row['latent_dim']}: {row['images_per_second']:.2f} img/s, {row['steps']} steps, "
            f"PSNR {row['test_psnr_3']}",
            flush=True,
        )

    lines = [
        "| res | D | model | width x depth | shared params | MAC/px | img/s | steps | test PSNR k=3 | "
        "peak mem GiB | ASMR/SIREN img/s |",
        "|" + "---|" * 11,
    ]
    for i in range(0, len(rows), 2):
        pair = rows[i : i + 2]
        byk = {r["model"]: r for r in pair}
        ratio = (
            byk["asmr"]["images_per_second"] / byk["siren"]["images_per_second"]
            if {"asmr", "siren"} <= set(byk)
            else None
        )
        for r in pair:
            ps = "-" if r["test_psnr_3"] is None else f"{r['test_psnr_3']:.2f}"
            ref = f" (functa {r['functa_seconds']} s/step)" if r.get("functa_seconds") else ""
            lines.append(
                f"| {r['resolution']} | {r['latent_dim']} | {r['model']}{ref} | {r['width']}x{r['depth']} | "
                f"{r['shared_params']:,} | {r['mac_per_pixel']:,.0f} | {r['images_per_second']:.2f} | "
                f"{r['steps']} | {ps} | {r['peak_memory_gib']:.2f} | "
                f"{'' if ratio is None or r['model'] != 'asmr' else f'{ratio:.1f}x'} |"
            )
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    meta_info = {
        "args": {k: v for k, v in vars(args).items() if k != "one"},
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "wall_seconds": time.time() - t0,
        "note": "shared 2-core machine: absolute speeds vary with other users' load; pairs run back to back",
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta_info, "rows": rows}, f, indent=2)
    os.replace(tmp, args.out)
    md = os.path.splitext(args.out)[0] + ".md"
    with open(md + ".tmp", "w") as f:
        f.write(
            f"# Meta-learning benchmark\n\n`{' '.join(sys.argv)}`\n\n{table}\n\n"
            f"Load average at the end: {os.getloadavg()}; {meta_info['note']}.\n"
        )
    os.replace(md + ".tmp", md)
    print(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
