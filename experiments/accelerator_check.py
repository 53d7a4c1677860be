"""One short run on an accelerator (or the CPU): ASMR vs SIREN with both sine implementations.

    python -m experiments.accelerator_check            # <= 5 min; on a GPU/TPU machine
    python -m experiments.accelerator_check --smoke    # tiny sizes, seconds (what the tests run)
    python -m experiments.accelerator_check --impls poly   # one sine implementation

For each sine implementation (``ASMR_JAX_SINE=poly`` and ``=xla``, each in its own
process) it times, as medians on the default backend:

* the full render of ASMR-4 and SIREN-4 (width 256) on Cameraman 512x512;
* one full-batch Adam step of each on Cameraman;
* one meta step of the main job's config (32x32 RGB patches, batch 16, latent 64, k=3:
  ASMR width 128, 4 levels; SIREN of equal shared parameters);
* ``fit_many`` of 64 patches, 100 full-batch steps (ASMR width 64, 3 levels; SIREN width 64, depth 3);

and reads ``device.memory_stats()["peak_bytes_in_use"]`` after each part (where the
backend reports it). Writes ``experiments/results/accelerator_check_<backend>.{json,md}``;
the ``auto`` choice of :mod:`asmr_jax.sine` should be the faster column there.
"""

from __future__ import annotations

import argparse
import json

from experiments.common import check_config, parser, pick, render_latency, run_sine_children, write_results

IMPLS = ("poly", "xla")


def get_config(arg: str | None = None) -> dict:
    """Sizes of each part; ``"smoke"``: tiny ones (seconds)."""
    check_config(arg, "smoke")
    if arg == "smoke":
        return {"width": 32, "side": 64, "bases": (2, 4, 8), "fit_steps": {"asmr": 20, "siren": 5},
                "meta_config": "cpu:smoke", "meta_repeats": 5, "fit_many_steps": 10, "fit_many": (8, 16),
                "render_repeats": 3}
    return {"width": 256, "side": 512, "bases": (4, 4, 4, 8), "fit_steps": {"asmr": 20, "siren": 5},
            "meta_config": "cpu", "meta_repeats": 9, "fit_many_steps": 100, "fit_many": (64, 32),
            "render_repeats": 11}


def _peak(device):
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def measure(smoke: bool) -> dict:
    """Runs in a child process whose ``ASMR_JAX_SINE`` picks the implementation."""
    import jax
    import numpy as np

    from asmr_jax import batch, data, fit, macs, sine
    from asmr_jax.asmr import ASMR
    from asmr_jax.siren import SIREN
    from meta import configs, optimize

    cfg = get_config("smoke" if smoke else None)
    dev = jax.devices()[0]
    out = {"impl": sine.implementation(), "backend": jax.default_backend(), "device": dev.device_kind}
    width, side = cfg["width"], cfg["side"]
    img = data.bundled_image("camera").data[:side, :side]
    for tag, model in (("asmr", ASMR(img.shape[:2], 1, bases=cfg["bases"], widths=width)),
                       ("siren", SIREN(img.shape[:2], 1, widths=(width,) * 3))):
        steps = cfg["fit_steps"][tag]
        params = model.init(jax.random.key(0))
        out[f"{tag}_render_ms"] = 1e3 * render_latency(model, params, cfg["render_repeats"])
        res = fit.fit(model, img, steps, progress=False, chunk=max(1, steps // 4))
        out[f"{tag}_step_ms"] = 1e3 * res.step_seconds
        out[f"{tag}_fit_peak_bytes"] = _peak(dev)

    config = configs.load(cfg["meta_config"])
    patches = np.random.default_rng(0).uniform(size=(config.batch_size, config.resolution, config.resolution, 3))
    patches = jax.numpy.asarray(patches, np.float32)
    for tag in ("asmr", "siren"):
        c = configs.load(cfg["meta_config"] + ("," if ":" in cfg["meta_config"] else ":") + tag)
        meta = configs.load_meta(c, 3)
        opt = optimize.make_optimizer(c.lr, c.clip)
        params = meta.init(jax.random.key(0))
        state = opt.init(params)
        step = optimize.make_meta_step(meta, opt)
        out[f"{tag}_meta_step_ms"] = 1e3 * macs.median_time(
            lambda s=step, p=params, o=state: jax.block_until_ready(s(p, o, patches)), repeats=cfg["meta_repeats"])
        out[f"{tag}_meta_peak_bytes"] = _peak(dev)

    n, side = cfg["fit_many"]
    signals = np.random.default_rng(1).uniform(size=(n, side, side, 3)).astype(np.float32)
    for tag, model in (("asmr", ASMR((side, side), 3, levels=3, widths=64)),
                       ("siren", SIREN((side, side), 3, widths=(64, 64)))):
        res = batch.fit_many(model, signals, cfg["fit_many_steps"], lr=1e-3, progress=False)  # compile
        res = batch.fit_many(model, signals, cfg["fit_many_steps"], lr=1e-3, progress=False)
        out[f"{tag}_fit_many_signals_per_s"] = len(signals) / res.fit_seconds
        out[f"{tag}_fit_many_psnr"] = float(np.mean(res.psnr))
        out[f"{tag}_fit_many_peak_bytes"] = _peak(dev)
    return out


PARTS = (("render_ms", "render ms"), ("step_ms", "full-batch step ms"), ("meta_step_ms", "meta step ms"),
         ("fit_many_signals_per_s", "fit-many signals/s"))


def to_markdown(res: dict) -> str:
    rows = res["impls"]
    lines = [f"Backend {rows[0]['backend']} ({rows[0]['device']}).", "",
             "| part | " + " | ".join(f"{m} {r['impl']}" for r in rows for m in ("ASMR", "SIREN")) + " |",
             "|---|" + "---|" * (2 * len(rows))]
    for key, label in PARTS:
        cells = [f"{r[f'{m}_{key}']:.2f}" for r in rows for m in ("asmr", "siren")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    peaks = [max(v for k, v in r.items() if k.endswith("_peak_bytes") and v) / 2**30
             if any(k.endswith("_peak_bytes") and v for k, v in r.items()) else None for r in rows]
    lines.append("")
    lines.append("Peak device memory (GiB, whole child run): "
                 + ", ".join(f"{r['impl']} {'-' if p is None else f'{p:.2f}'}" for r, p in zip(rows, peaks)))
    by_impl = {r["impl"]: r for r in rows}
    if set(IMPLS) <= set(by_impl):  # the ratios need both implementations
        for key, label in PARTS[:3]:
            a, b = by_impl["poly"][f"asmr_{key}"], by_impl["xla"][f"asmr_{key}"]
            lines.append(f"- ASMR {label}: poly/xla time ratio {a / b:.2f} (< 1: the polynomial is faster)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated sine implementations, of {IMPLS}")
    p.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.smoke)))
        return 0
    impls = pick(args.impls, IMPLS, "--impls")
    rows = run_sine_children("experiments.accelerator_check", impls, ["--smoke"] * args.smoke, timeout=600)
    res = {"impls": rows, "smoke": args.smoke}
    md = to_markdown(res)
    print(md)
    name = f"accelerator_check_{rows[0]['backend']}" + ("_smoke" if args.smoke else "")
    write_results(args.out, name, res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
