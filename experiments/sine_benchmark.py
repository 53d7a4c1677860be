"""XLA's sine against the library's polynomial sine (``asmr_jax.sine``), side by side.

For each implementation (``ASMR_JAX_SINE=xla`` and ``=poly``, each in its own process)
this measures, as medians:

* one million ``sin`` values, and one million ``(sin, cos)`` pairs;
* the full render of SIREN-4 and ASMR-4 (width 256) on Cameraman 512x512 and on a
  512x768 RGB grid with the paper's Kodak bases, and their ratio;
* a full-batch Adam step of ASMR-4 and SIREN-4 on Cameraman;
* the largest difference between the two implementations' ASMR-4 renders.

    python -m experiments.sine_benchmark            # about 3 minutes on 2 cores
    python -m experiments.sine_benchmark --smoke    # small grids, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from experiments.common import check_config, parser, render_latency, run_sine_children, write_results

IMPLS = ("xla", "poly")
GRIDS = {  # name: (shape, channels, ASMR-4 bases)
    "cameraman": ((512, 512), 1, (4, 4, 4, 8)),
    "kodak": ((512, 768), 3, ((4, 4, 4, 8), (4, 4, 6, 8))),
}
SMOKE_GRIDS = {"small": ((64, 64), 1, (2, 4, 8))}


def get_config(arg: str | None = None) -> dict:
    """Network width, grids and timing repeats; ``"smoke"``: small grids (seconds)."""
    check_config(arg, "smoke")
    return {"width": 32 if arg == "smoke" else 256, "grids": SMOKE_GRIDS if arg == "smoke" else GRIDS,
            "sine_repeats": 21, "render_repeats": {"asmr": 21, "siren": 5},
            "fit_side": 64 if arg == "smoke" else 512, "fit_bases": (2, 4, 8) if arg == "smoke" else (4, 4, 4, 8),
            "fit_steps": {"asmr": 40, "siren": 4}}


def measure(smoke: bool, render_out: str) -> dict:
    """Runs in a child process whose ``ASMR_JAX_SINE`` picks the implementation."""
    import jax
    import numpy as np

    from asmr_jax import data, fit, macs, sine
    from asmr_jax.asmr import ASMR
    from asmr_jax.siren import SIREN

    cfg = get_config("smoke" if smoke else None)
    width = cfg["width"]
    out = {"impl": sine.IMPL, "device": jax.devices()[0].device_kind}
    x = jax.random.normal(jax.random.key(0), (1 << 20,)) * 100.0
    one_sin = jax.jit(sine.sin)
    pair = jax.jit(sine.sincos)
    out["sin_1m_ms"] = 1e3 * macs.median_time(lambda: one_sin(x).block_until_ready(), repeats=cfg["sine_repeats"])
    out["sincos_1m_ms"] = 1e3 * macs.median_time(lambda: jax.block_until_ready(pair(x)), repeats=cfg["sine_repeats"])

    for name, (shape, channels, bases) in cfg["grids"].items():
        asmr = ASMR(shape, channels, bases=bases, widths=width)
        siren = SIREN(shape, channels, widths=(width,) * 3)
        row = {}
        for tag, model in (("asmr", asmr), ("siren", siren)):
            params = model.init(jax.random.key(0))
            row[f"{tag}_render_ms"] = 1e3 * render_latency(model, params, cfg["render_repeats"][tag])
        row["ratio"] = row["siren_render_ms"] / row["asmr_render_ms"]
        out[name] = row
    shape, channels, bases = next(iter(cfg["grids"].values()))  # the first grid's ASMR render, to compare impls
    asmr = ASMR(shape, channels, bases=bases, widths=width)
    np.save(render_out, np.asarray(jax.jit(asmr.render)(asmr.init(jax.random.key(0)))))

    side, fit_bases = cfg["fit_side"], cfg["fit_bases"]
    img = data.bundled_image("camera").data[:side, :side]
    shape = img.shape[:2]
    for tag, model in (("asmr", ASMR(shape, 1, bases=fit_bases, widths=width)),
                       ("siren", SIREN(shape, 1, widths=(width,) * 3))):
        steps = cfg["fit_steps"][tag]
        res = fit.fit(model, img, steps, progress=False, chunk=max(1, steps // 4))
        out[f"{tag}_step_ms"] = 1e3 * res.step_seconds
        out[f"{tag}_psnr"] = res.psnr
    return out


def to_markdown(res: dict) -> str:
    rows = res["impls"]
    grids = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    lines = [
        "| sine | 1M sin ms | 1M sin+cos ms | "
        + " | ".join(f"{g} SIREN-4 ms | {g} ASMR-4 ms | {g} ratio" for g in grids)
        + " | ASMR-4 step ms | SIREN-4 step ms |",
        "|" + "---|" * (5 + 3 * len(grids)),
    ]
    for r in rows:
        cells = [r["impl"], f"{r['sin_1m_ms']:.2f}", f"{r['sincos_1m_ms']:.2f}"]
        for g in grids:
            cells += [f"{r[g]['siren_render_ms']:.0f}", f"{r[g]['asmr_render_ms']:.2f}", f"**{r[g]['ratio']:.1f}x**"]
        cells += [f"{r['asmr_step_ms']:.1f}", f"{r['siren_step_ms']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    xla, poly = rows
    lines.append("")
    lines.append(f"- speed-up of the polynomial sine: 1M sin {xla['sin_1m_ms'] / poly['sin_1m_ms']:.1f}x, "
                 + ", ".join(f"{g} SIREN-4 render {xla[g]['siren_render_ms'] / poly[g]['siren_render_ms']:.1f}x, "
                             f"ASMR-4 render {xla[g]['asmr_render_ms'] / poly[g]['asmr_render_ms']:.1f}x"
                             for g in grids)
                 + f", ASMR-4 step {xla['asmr_step_ms'] / poly['asmr_step_ms']:.1f}x, "
                 f"SIREN-4 step {xla['siren_step_ms'] / poly['siren_step_ms']:.1f}x")
    lines.append(f"- largest difference between the two ASMR-4 renders: {res['max_render_diff']:.2e}; "
                 f"fit PSNR after the same steps: ASMR-4 {xla['asmr_psnr']:.3f} vs {poly['asmr_psnr']:.3f} dB")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--render-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.smoke, args.render_out)))
        return 0

    import numpy as np

    rows, renders = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for impl in IMPLS:
            path = os.path.join(tmp, f"{impl}.npy")
            rows += run_sine_children("experiments.sine_benchmark", [impl],
                                      ["--render-out", path] + ["--smoke"] * args.smoke)
            renders.append(np.load(path))
    res = {"impls": rows, "max_render_diff": float(np.abs(renders[0] - renders[1]).max()), "smoke": args.smoke}
    md = to_markdown(res)
    print(md)
    write_results(args.out, "sine_benchmark_smoke" if args.smoke else "sine_benchmark", res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
