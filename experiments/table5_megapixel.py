"""Paper Table 5: megapixel images (the paper: 8192x8192 Pluto, which cannot be downloaded).

Two parts:

1. Fit: retina (1411x1411 RGB, the largest photo bundled with scikit-image) with
   *sampled* training (the block sampler of :func:`asmr_jax.fit.fit`), ASMR with 6
   levels (``auto_bases``: 1411 pads to 1440 = 2x3x3x4x4x5) vs SIREN-6 of the same width
   (128 here, 512 in the paper), for a stated, small number of steps (2 shared CPU cores).
   Note that sampled training runs the per-point path, so an ASMR step costs as much as
   a SIREN step; only the full-grid render shares activations.
2. Render: an 8192x8192 RGB render of freshly initialised 6-level width-512 ASMRs
   (render cost does not depend on the weights): the paper's bases ``[4,4,4,4,4,8]``
   and, for comparison, ``[4,4,4,4,2,16]`` (same params, smaller last coarse grid).
   Each render runs in its own process so its peak RSS (``common.peak_rss_mib``) is its
   own; XLA's compiled memory estimate is recorded first, and a render whose estimate
   exceeds ``max_render_gb`` (default: 70% of the memory available now) is reported as
   not run instead of being started.

    python -m experiments.table5_megapixel          # ~20 min on 2 busy shared CPU cores
    python -m experiments.table5_megapixel --smoke  # seconds
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jax

from asmr_jax import data, macs
from asmr_jax.asmr import ASMR
from asmr_jax.siren import SIREN
from experiments import common

NAME = "table5_megapixel"
PAPER = {  # Table 5 (Pluto 8192x8192, 10k steps): params (M), MACs (M), PSNR, SSIM
    "siren": (1.054, 1.054, 31.66, 0.825),
    "asmr": (1.059, 0.006, 33.10, 0.857),
}


def get_config(arg: str | None = None) -> dict:
    """Table 5 settings; ``arg="smoke"`` fits a 48x48 crop and renders 256x256."""
    common.check_config(arg, "smoke")
    cfg = dict(
        image="retina",
        crop=None,  # None: the whole 1411x1411 photo
        levels=6,
        width=128,  # the paper uses 512 on Pluto; 128 keeps SIREN-6's sampled steps affordable here
        batch_size=1 << 13,  # points per step (the block sampler takes >= 1 point per 16x16 block)
        steps=100,
        lr=1e-4,
        seed=0,
        render_size=8192,
        render_width=512,
        render_bases=((4, 4, 4, 4, 4, 8), (4, 4, 4, 4, 2, 16)),
        render_repeats=1,
        fit_render_latency=False,  # time the trained models' full renders too (SIREN: minutes here)
        max_render_gb=None,  # None: 70% of MemAvailable
    )
    if arg == "smoke":
        cfg.update(
            crop=48,
            levels=3,
            width=16,
            batch_size=256,
            steps=3,
            render_size=256,
            render_width=16,
            render_bases=((4, 4, 4, 4),),
            fit_render_latency=True,
        )
    return cfg


def available_gb() -> float:
    """``MemAvailable`` from ``/proc/meminfo`` in GiB (``inf`` where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def render_child(size: int, bases, width: int, repeats: int, max_gb: float) -> dict:
    """Compiles and (if XLA's estimate is below ``max_gb``) runs one ``[size, size, 3]`` render.

    Runs inside a fresh process (see :func:`measure_render`) so ``max_rss_mb`` is this render's.
    """
    model = ASMR((size, size), 3, bases=bases, widths=width)
    params = model.init(jax.random.key(0))
    t0 = time.perf_counter()
    compiled = jax.jit(model.render).lower(params).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla_gb = (mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes) / 2**30
    cost = macs.count(model)
    out = dict(
        size=size,
        bases=list(bases),
        width=width,
        params=model.num_params(),
        paper_macs=cost.paper_macs,
        render_macs=cost.render_macs,
        xla_gb=xla_gb,
        compile_seconds=compile_s,
        limit_gb=max_gb,
    )
    if xla_gb > max_gb:
        out.update(ran=False, reason=f"XLA needs {xla_gb:.1f} GiB > limit {max_gb:.1f} GiB")
        return out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - t0)
    out.update(
        ran=True,
        render_seconds=sorted(times)[len(times) // 2],
        shape=list(y.shape),
        finite=bool(jax.numpy.isfinite(y).all()),
        max_rss_mb=common.peak_rss_mib(),
    )
    return out


def measure_render(size: int, bases, width: int, repeats: int, max_gb: float) -> dict:
    """:func:`render_child` in a new Python process; returns its result dict."""
    args = json.dumps(dict(size=size, bases=list(bases), width=width, repeats=repeats, max_gb=max_gb))
    code = (
        "import json, sys; from experiments.table5_megapixel import render_child; "
        "print('RESULT ' + json.dumps(render_child(**json.loads(sys.argv[1]))))"
    )
    env = common.child_env()
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return dict(
            size=size,
            bases=list(bases),
            width=width,
            ran=False,
            reason=f"render process exited with {proc.returncode}: {proc.stderr.strip()[-300:]}",
        )
    return json.loads(lines[-1][len("RESULT ") :])


def run(cfg: dict, out_dir: str) -> dict:
    t_start = time.perf_counter()
    sig = data.bundled_image(cfg["image"])
    if cfg["crop"]:
        sig = data.crop(sig, cfg["crop"])
    img, shape = sig.data, sig.shape
    fits = []
    contenders = [
        ("ASMR", ASMR(shape, 3, widths=cfg["width"], levels=cfg["levels"])),
        ("SIREN", SIREN(shape, 3, widths=(cfg["width"],) * (cfg["levels"] - 1))),
    ]
    for label, model in contenders:
        res, row = common.fit_row(
            model, img, cfg, 1 if cfg["fit_render_latency"] else None, batch_size=cfg["batch_size"]
        )
        lat = row["render_seconds"]
        fits.append(dict(model=label, **row))
        print(
            f"{label:6s} PSNR {res.psnr:6.2f} SSIM {res.ssim:.3f} step {res.step_seconds * 1e3:8.1f} ms "
            f"render {common.fmt(lat, 2)} s",
            flush=True,
        )
    max_gb = cfg["max_render_gb"] or 0.7 * available_gb()
    renders = []
    for bases in cfg["render_bases"]:
        r = measure_render(cfg["render_size"], bases, cfg["render_width"], cfg["render_repeats"], max_gb)
        renders.append(r)
        print("render", json.dumps(r), flush=True)
    payload = dict(config=cfg, shape=shape, fits=fits, renders=renders, runtime_seconds=time.perf_counter() - t_start)
    common.report(out_dir, NAME, payload, to_markdown)
    return payload


def to_markdown(payload) -> str:
    cfg = payload["config"]
    size = "x".join(map(str, payload["shape"]))
    fit_rows = [
        [
            f["model"],
            common.fmt(f["params"]),
            common.fmt(f["paper_macs"], 0),
            f"{f['psnr']:.2f}",
            f"{f['ssim']:.3f}",
            common.fmt(1e3 * f["step_seconds"], 1),
            common.fmt(f["render_seconds"], 2),
        ]
        for f in payload["fits"]
    ]
    render_rows = []
    for r in payload["renders"]:
        ran = r.get("ran")
        render_rows.append(
            [
                str(r["bases"]),
                common.fmt(r.get("params")),
                common.fmt(r.get("paper_macs"), 0),
                common.fmt(r.get("xla_gb"), 2),
                "yes" if ran else f"no ({r.get('reason', '')})",
                common.fmt(r.get("render_seconds"), 1) if ran else "-",
                common.fmt(r.get("max_rss_mb", float("nan")) / 1024, 2) if ran else "-",
            ]
        )
    rs = cfg["render_size"]
    return "\n".join(
        [
            f"## Table 5 (megapixel): {cfg['image']} {size} RGB, sampled training "
            f"(batch ~{cfg['batch_size']} points), {cfg['steps']} Adam steps (lr {cfg['lr']}), "
            f"{cfg['levels']} levels / layers, width {cfg['width']}",
            "",
            common.markdown_table(
                ["model", "params", "MAC/px", "PSNR dB", "SSIM", "train ms/step", "render s"], fit_rows
            ),
            "",
            f"### {rs}x{rs} RGB render, {len(cfg['render_bases'][0])}-level ASMR width {cfg['render_width']} "
            "(fresh weights, one process per render)",
            "",
            common.markdown_table(
                [
                    "bases (both axes)",
                    "params",
                    "MAC/px",
                    "XLA estimate GiB",
                    "ran",
                    "render s",
                    "peak RSS GiB",
                ],
                render_rows,
            ),
            "",
            "Paper (Pluto 8192x8192, 10k steps):",
            "",
            common.markdown_table(
                ["model", "params (M)", "MACs (M)", "PSNR dB", "SSIM"],
                [[k.upper(), *map(str, v)] for k, v in PAPER.items()],
            ),
            "",
            f"Runtime: {payload['runtime_seconds']:.0f} s.",
        ]
    )


main = common.config_main(__doc__, get_config, run)


if __name__ == "__main__":
    main()
