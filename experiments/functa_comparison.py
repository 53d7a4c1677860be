"""Functa's exact settings vs the CPU preset, ASMR vs SIREN at equal parameters, latent 64 and 256.

    python -m experiments.functa_comparison                # ~45 min on 2 cores (8 runs, 1000 steps each)
    python -m experiments.functa_comparison --smoke        # seconds
    python -m experiments.functa_comparison --steps 500    # shorter
    python -m experiments.functa_comparison --rows functa  # one setting

Every run uses the bundled photo patches (32x32 RGB; test patches come from photos never
trained on), batch 16, k = 3 inner steps, functa's parameterization (shifts inside ``w0``,
haiku init of the latent map, meta-SGD at ``lr_scale = 1``) and the same number of outer
steps. Rows differ in what the CPU preset (``meta/configs/cpu.py``) changes from
functa's CelebA config:

* ``functa``: functa's outer loop exactly: Adam 3e-6, no gradient clip, ``functa_init``
  (hidden biases 0, output bias 0.5);
* ``cpu preset``: our SIREN init (biases drawn like the weights) with Adam 3e-4, clip 1.

Test PSNR after 3 and 10 inner steps on 64 test patches is recorded every
``eval_every`` steps. Finished runs are reused (their workdirs are kept under
``--workdir``), so an interrupted run continues where it stopped. Writes
``experiments/results/functa_comparison.{json,md}``.
"""

from __future__ import annotations

import json
import os
import sys

from experiments import common

ROWS = {  # name -> overrides of the cpu config
    "functa": dict(lr=3e-6, clip=None, functa_init=True),
    "cpu preset": dict(lr=3e-4, clip=1.0, functa_init=False),
}


def get_config(arg=None) -> dict:
    common.check_config(arg, "smoke")
    if arg == "smoke":
        return {"steps": 4, "eval_every": 2, "latents": [8], "models": ["asmr", "siren"], "rows": list(ROWS),
                "width": 16, "levels": 3, "eval_images": 8}
    return {"steps": 1000, "eval_every": 250, "latents": [64, 256], "models": ["asmr", "siren"],
            "rows": list(ROWS), "width": 128, "levels": 4, "eval_images": 64}


def run_config(name: str, kind: str, latent: int, cfg: dict):
    from meta import configs

    config = configs.load("cpu")
    config.update(width=cfg["width"], levels=cfg["levels"], latent_dim=latent, steps=cfg["steps"],
                  eval_every=cfg["eval_every"], eval_images=cfg["eval_images"], checkpoint_every=cfg["eval_every"],
                  **ROWS[name])
    if kind == "siren":  # same depth, the width of equal shared parameters
        ref = configs.load_meta(config, 3).num_params()
        config.width = configs.equal_params_width(config, "siren", ref, 3)
        config.model = "siren"
        config.depth = cfg["levels"]
    return config


def main(argv=None) -> int:
    args, cfg = common.parse_config(__doc__, get_config, argv, extra=lambda p: (
        p.add_argument("--workdir", default="runs/functa_comparison", help="run folders (reused when finished)"),
        p.add_argument("--rows", default=None, help=f"comma-separated settings to run, of {list(ROWS)} (default all)")))
    if args.rows is not None:
        cfg["rows"] = common.pick(args.rows, ROWS, "--rows")
    from meta import configs
    from meta.train import train

    rows = []
    for latent in cfg["latents"]:
        for kind in cfg["models"]:
            for name in cfg["rows"]:
                config = run_config(name, kind, latent, cfg)
                tag = f"{name.replace(' ', '-')}-{kind}-d{latent}-s{cfg['steps']}" + ("-smoke" if args.smoke else "")
                workdir = os.path.join(args.workdir, tag)
                done = os.path.join(workdir, "metrics.json")
                if os.path.isfile(done) and json.load(open(done))["step"] >= cfg["steps"]:
                    metrics = json.load(open(done))
                    history = json.load(open(os.path.join(workdir, "history.json")))
                else:
                    resume = os.path.isdir(os.path.join(workdir, "checkpoints"))
                    r = train(configs.to_config(config), workdir, resume=resume, plots=True,
                              log=lambda *a: None)
                    metrics, history = r.metrics, r.history
                curve = {h["step"]: (h.get("test_psnr_3"), h.get("test_psnr_10")) for h in history
                         if "test_psnr_3" in h}
                rows.append({"setting": name, "model": kind, "latent": latent, "width": config.width,
                             "shared_params": metrics["shared_params"], "status": metrics["status"],
                             "images_per_second": metrics["images_per_second"], "curve": curve,
                             "test_psnr_3": metrics["test_psnr"].get("3"),
                             "test_psnr_10": metrics["test_psnr"].get("10")})
                print(f"{name:>12} {kind:>5} latent {latent:>4}: k=3 {common.fmt(rows[-1]['test_psnr_3'])} dB, "
                      f"k=10 {common.fmt(rows[-1]['test_psnr_10'])} dB", flush=True)
    payload = {"config": cfg, "rows": rows}
    common.report(args.out, "functa_comparison" + ("_smoke" if args.smoke else ""), payload, to_markdown)
    return 0


def to_markdown(payload) -> str:
    cfg = payload["config"]
    evals = sorted({int(s) for r in payload["rows"] for s in r["curve"]})
    headers = ["setting", "model", "latent", "width", "params", "img/s"] + [f"k=3 @{s}" for s in evals] + [
        f"k=10 @{evals[-1]}" if evals else "k=10"]
    body = []
    for r in payload["rows"]:
        curve = {int(k): v for k, v in r["curve"].items()}
        body.append([r["setting"], r["model"], r["latent"], r["width"], f"{r['shared_params']:,}",
                     common.fmt(r["images_per_second"], 1)] + [common.fmt(curve.get(s, (None,))[0]) for s in evals]
                    + [common.fmt(r["test_psnr_10"])])
    return (f"Test PSNR (dB) on held-out patches after k inner steps, at outer steps {evals}; "
            f"{cfg['steps']} steps, batch 16, bundled 32x32 patches.\n\n" + common.markdown_table(headers, body))


if __name__ == "__main__":
    sys.exit(main())
