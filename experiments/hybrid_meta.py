"""Hybrid vs implicit under meta-learning: an Instant-NGP hash grid in the functa loop, against
ASMR-functa and SIREN-functa at equal shared parameters.

The ASMR paper argues that hybrid representations (a grid of features, here Instant-NGP's
hash grid) cannot learn a global latent structure across a dataset, while a purely
implicit ASMR can. This runs the same functa loop (``meta.train``: k = 3 meta-SGD inner
steps on a latent, shifts from a shared linear map, Adam outer loop) with four
backbones of (about) the same number of shared parameters:

* ``asmr``: the main job's preset (``meta/configs/cpu.py``: width 128, 4 levels);
* ``siren``: SIREN of the width that matches ASMR's shared parameters;
* ``ngp-mlp``: hash grid + ReLU MLP, the latent's shifts modulating the MLP's hidden
  layers (the grid itself is shared by all images);
* ``ngp-features``: the same grid, the shifts added to its interpolated features.

(Two hash-grid rows run at a 10x larger outer learning rate: hash tables usually
train at 1e-2, so a slow outer rate should not be what decides.)

Each gets the same wall-clock budget of training (``--minutes``, compilation excluded)
on the bundled 32x32 photo patches and on LFW faces (25x25 gray), then reports test PSNR
after k = 3 inner steps on unseen images and images/s.

    python -m experiments.hybrid_meta              # 2 datasets x 5 runs x --minutes (default 3)
    python -m experiments.hybrid_meta --smoke      # seconds
    python -m experiments.hybrid_meta --only asmr,ngp-mlp   # some backbones

Results: experiments/results/hybrid_meta.{json,md}.
"""

from __future__ import annotations

import json
import os
import sys

from experiments import common

NAME = "hybrid_meta"
DATASETS = {"patches": 32, "lfw": 25}


def get_config(arg=None) -> dict:
    common.check_config(arg, "smoke")
    cfg = {"datasets": list(DATASETS), "minutes": 3.0, "latent_dim": 64, "lr": 3e-4, "ngp_lr_factor": 10.0,
           "eval_images": 64, "eval_every": 500, "smoke": False}
    if arg == "smoke":
        cfg.update(datasets=["lfw"], minutes=0.02, latent_dim=8, eval_images=8, eval_every=5, smoke=True)
    return cfg


def ngp_config(shape, channels: int, modulate: str, latent_dim: int, target: int, smoke: bool) -> dict:
    """An Instant-NGP config whose functa has about ``target`` shared parameters (MLP width searched)."""
    from asmr_jax.ngp import InstantNGP
    from meta import functa

    best = None
    for width in range(8, 257, 4):
        net = InstantNGP(tuple(shape), channels, levels=4 if smoke else 8, features=2,
                         log2_table=6 if smoke else 10, base_resolution=4, growth=1.5, widths=(width, width),
                         modulate=modulate)
        n = functa.MetaModel(net, latent_dim=latent_dim).num_params()
        if best is None or abs(n - target) < abs(best[0] - target):
            best = (n, net)
    return best[1].config()


def contenders(dataset: str, cfg: dict):
    """``(name, TrainConfig)`` per backbone, equal shared parameters."""
    from meta import configs

    base = configs.load("cpu:smoke" if cfg["smoke"] else "cpu")
    base.update(dataset=dataset, resolution=DATASETS[dataset] if not cfg["smoke"] else 16,
                latent_dim=cfg["latent_dim"], lr=cfg["lr"], eval_images=cfg["eval_images"],
                eval_every=cfg["eval_every"], checkpoint_every=cfg["eval_every"], steps=10**7)
    channels = configs.channels_of(base)
    target = configs.load_meta(base, channels).num_params()
    shape = (base.resolution,) * 2
    siren = base.copy_and_resolve_references()
    siren.update(model="siren", width=configs.equal_params_width(base, "siren", target, channels),
                 depth=base.levels)
    out = [("asmr", configs.to_config(base)), ("siren", configs.to_config(siren))]
    for modulate, factor in (("mlp", 1.0), ("mlp", cfg["ngp_lr_factor"]), ("features", cfg["ngp_lr_factor"])):
        ngp = configs.to_config(base).replace(
            model=ngp_config(shape, channels, modulate, cfg["latent_dim"], target, cfg["smoke"]), lr=cfg["lr"] * factor)
        out.append((f"ngp-{modulate}" + (f" lr x{factor:g}" if factor != 1.0 else ""), ngp))
    return out


def main(argv=None) -> int:
    args, cfg = common.parse_config(__doc__, get_config, argv, extra=lambda p: (
        p.add_argument("--workdir", default="runs/hybrid_meta", help="run folders (finished runs are reused)"),
        p.add_argument("--minutes", type=float, default=None, help="training budget per run (default 3)"),
        p.add_argument("--only", default=None, help="comma-separated backbones to run, named as in the results "
                                                    "table (default all)")))
    if args.minutes is not None:
        cfg["minutes"] = args.minutes
    from meta.train import train

    runs = [(dataset, name, config) for dataset in cfg["datasets"] for name, config in contenders(dataset, cfg)]
    if args.only is not None:
        chosen = common.pick(args.only, dict.fromkeys(name for _, name, _ in runs), "--only")
        runs = [run for run in runs if run[1] in chosen]
    rows = []
    for dataset, name, config in runs:
        tag = f"{dataset}-{name.replace(' ', '')}-d{cfg['latent_dim']}-{cfg['minutes']:g}min"
        workdir = os.path.join(args.workdir, tag + ("-smoke" if cfg["smoke"] else ""))
        done = os.path.join(workdir, "metrics.json")
        if os.path.isfile(done):
            with open(done) as f:
                metrics = json.load(f)
        else:
            metrics = train(config.replace(max_seconds=60 * cfg["minutes"]), workdir, progress=False,
                            log=lambda *a: None).metrics
        model = config.model if isinstance(config.model, str) else config.model["kind"]
        rows.append({"dataset": dataset, "backbone": name, "model": model, "lr": config.lr,
                     "shared_params": metrics["shared_params"], "network_params": metrics["network_params"],
                     "steps": metrics["step"], "images_per_second": metrics["images_per_second"],
                     "test_psnr_3": metrics["test_psnr"].get(str(config.inner_steps)),
                     "test_psnr_10": metrics["test_psnr"].get("10"), "status": metrics["status"]})
        r = rows[-1]
        print(f"{dataset:8s} {name:18s} {r['shared_params']:>8,} params {r['steps']:>6} steps "
              f"k=3 {common.fmt(r['test_psnr_3'])} dB  {common.fmt(r['images_per_second'], 0)} img/s",
              flush=True)
    payload = {"config": cfg, "rows": rows}
    common.report(args.out, NAME + ("_smoke" if cfg["smoke"] else ""), payload, to_markdown)
    return 0


def to_markdown(payload) -> str:
    cfg = payload["config"]
    body = [[r["dataset"], r["backbone"], f"{r['shared_params']:,}", f"{r['lr']:g}", r["steps"],
             common.fmt(r["images_per_second"], 0), common.fmt(r["test_psnr_3"]), common.fmt(r["test_psnr_10"])]
            for r in payload["rows"]]
    return (f"Functa loop, latent {cfg['latent_dim']}, k = 3, batch 16, {cfg['minutes']:g} min of training per "
            f"run; test PSNR on {cfg['eval_images']} unseen images.\n\n"
            + common.markdown_table(["dataset", "backbone", "shared params", "outer lr", "steps", "img/s",
                                     "PSNR k=3", "PSNR k=10"], body))


if __name__ == "__main__":
    sys.exit(main())
