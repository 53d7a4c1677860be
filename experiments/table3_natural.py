"""Paper Table 3: natural RGB images, ASMR vs SIREN vs FFN at matched parameter counts.

Kodak cannot be downloaded here; scikit-image's bundled RGB photos stand in for it, each
at its own aspect ratio (non-factorable sizes included: ASMR pads the grid with
``auto_bases``). On 2 shared CPU cores a 10k-step SIREN fit of a 512x768 image takes
hours, so by default every photo is downscaled (anti-aliased) to at most
``max_pixels`` pixels and every model is trained for the same, stated, number of steps.
Render latency is measured twice: on the trained (downscaled) models, and on freshly
initialised models at the Kodak size 512x768 (latency does not depend on the weights),
where ASMR uses the paper's bases ``[[4,4,4,8],[4,4,6,8]]``.

    python -m experiments.table3_natural            # ~30 min on 2 shared (busy) CPU cores
    python -m experiments.table3_natural --smoke    # seconds
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np

from asmr_jax import data, macs, models
from experiments import common

NAME = "table3_natural"
IMAGES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
)
PAPER = {  # Table 3 (Kodak, 10k steps): params (K), MACs (K), PSNR, SSIM, server latency (ms)
    "ffn": (132.4, 131.8, "31.04 +- 3.23", "0.841 +- 0.045", 369.5),
    "siren": (133.1, 132.4, "32.40 +- 3.33", "0.890 +- 0.037", 441.4),
    "asmr": (134.7, 1.85, "33.09 +- 2.70", "0.892 +- 0.021", 143.9),
}


def get_config(arg: str | None = None) -> dict:
    """Table 3 settings; ``arg="smoke"`` gives a seconds-long run on one tiny image."""
    common.check_config(arg, "smoke")
    cfg = dict(
        images=IMAGES,
        max_pixels=64 * 64,  # downscale every photo to at most this many pixels
        steps=200,
        lr=1e-4,
        width=256,
        depth=4,  # SIREN-4, ASMR-4 (4 levels), FFN-4 (encoding + 2 hidden + output)
        ffn_sigma=10.0,
        models=("asmr", "siren", "ffn"),
        latency_repeats=5,
        kodak_shape=(512, 768),
        kodak_bases=((4, 4, 4, 8), (4, 4, 6, 8)),
        seed=0,
    )
    if arg == "smoke":
        cfg.update(
            images=("chelsea",),
            max_pixels=24 * 36,
            steps=2,
            width=16,
            latency_repeats=1,
            kodak_shape=(16, 24),
            kodak_bases=((2, 2, 2, 2), (2, 2, 2, 3)),
        )
    return cfg


def target_shape(shape, max_pixels: int) -> tuple[int, int]:
    """``shape`` scaled down (aspect kept) to at most ``max_pixels`` pixels; never up."""
    h, w = shape
    f = min(1.0, math.sqrt(max_pixels / (h * w)))
    return max(2, int(h * f)), max(2, int(w * f))


def build(kind: str, shape, cfg: dict, bases=None):
    """The three contenders at one width; parameter counts match to ~2%."""
    if kind == "asmr":
        return models.build("asmr", shape, 3, width=cfg["width"], levels=cfg["depth"], bases=bases)
    if kind == "ffn":
        return models.MODELS["ffn"].build(shape, 3, width=cfg["width"], depth=cfg["depth"], sigma=cfg["ffn_sigma"])
    return models.build(kind, shape, 3, width=cfg["width"], depth=cfg["depth"])


def load_photo(name: str) -> np.ndarray:
    """A bundled RGB photo ``[H, W, 3]`` on ``[0, 1]``.

    scikit-image 0.26 ships the two motorcycle views in its wheel but exposes them only
    through ``skimage.data.stereo_motorcycle()``, so they are read from there.
    """
    if name in ("motorcycle_left", "motorcycle_right"):
        import skimage.data

        left, right, _ = skimage.data.stereo_motorcycle()
        arr = np.asarray(left if name == "motorcycle_left" else right, np.float32) / 255.0
    else:
        arr = data.bundled_image(name).data
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name} has shape {arr.shape}; Table 3 uses RGB photos [H, W, 3]")
    return arr


def run(cfg: dict, out_dir: str, resume: bool = False) -> dict:
    t_start = time.perf_counter()
    rows = common.read_partial(out_dir, NAME, cfg) if resume else []
    if rows:
        print(f"resuming with {len(rows)} finished fits", flush=True)
    for name in cfg["images"]:
        photo = load_photo(name)
        shape = target_shape(photo.shape[:2], cfg["max_pixels"])
        img = common.resize(photo, shape)
        for kind in cfg["models"]:
            if any(r["image"] == name and r["model"] == kind for r in rows):
                continue
            model = build(kind, shape, cfg)
            res, row = common.fit_row(model, img, cfg, cfg["latency_repeats"])
            lat = row["render_seconds"]
            rows.append(
                dict(
                    image=name,
                    native_shape=photo.shape[:2],
                    shape=shape,
                    model=kind,
                    **row,
                )
            )
            print(
                f"{name:22s} {str(shape):12s} {kind:6s} PSNR {res.psnr:6.2f} SSIM {res.ssim:.3f} "
                f"step {res.step_seconds * 1e3:8.1f} ms render {lat * 1e3:8.2f} ms",
                flush=True,
            )
            common.write_partial(out_dir, NAME, dict(config=cfg, rows=rows))

    # Latency at the Kodak size with the paper's bases (fresh weights: latency is weight-independent).
    kodak = {}
    for kind in cfg["models"]:
        bases = cfg["kodak_bases"] if kind == "asmr" else None
        model = build(kind, cfg["kodak_shape"], cfg, bases=bases)
        params = model.init(jax.random.key(cfg["seed"]))
        kodak[kind] = dict(
            render_seconds=common.render_latency(model, params, cfg["latency_repeats"]),
            params=model.num_params(),
            paper_macs=macs.count(model).paper_macs,
        )

    summary = summarize(rows, cfg)
    payload = dict(
        config=cfg,
        rows=rows,
        summary=summary,
        kodak_latency=kodak,
        runtime_seconds=time.perf_counter() - t_start,
    )
    common.report(out_dir, NAME, payload, to_markdown)
    common.remove_partial(out_dir, NAME)
    return payload


def summarize(rows, cfg) -> dict:
    out = {}
    for kind in cfg["models"]:
        mine = [r for r in rows if r["model"] == kind]
        out[kind] = dict(
            params=mine[0]["params"],
            paper_macs=common.mean_std(r["paper_macs"] for r in mine)[0],
            psnr=common.mean_std(r["psnr"] for r in mine),
            ssim=common.mean_std(r["ssim"] for r in mine),
            step_ms=1e3 * common.mean_std(r["step_seconds"] for r in mine)[0],
            render_ms=1e3 * common.mean_std(r["render_seconds"] for r in mine)[0],
        )
    if "siren" in out and "asmr" in out:  # per-image latency ratio, measured side by side
        ratios = []
        for name in cfg["images"]:
            by = {r["model"]: r for r in rows if r["image"] == name}
            ratios.append(by["siren"]["render_seconds"] / by["asmr"]["render_seconds"])
        out["siren_over_asmr_render"] = common.mean_std(ratios)
    return out


def to_markdown(payload) -> str:
    cfg, summary, kodak = payload["config"], payload["summary"], payload["kodak_latency"]
    ks = "x".join(str(s) for s in cfg["kodak_shape"])
    headers = [
        "model",
        "params",
        "MAC/px (paper conv.)",
        "PSNR dB",
        "SSIM",
        "train ms/step",
        "render ms (trained size)",
        f"render ms ({ks})",
    ]
    rows = []
    for kind in cfg["models"]:
        s = summary[kind]
        rows.append(
            [
                kind.upper(),
                common.fmt(s["params"]),
                common.fmt(s["paper_macs"], 0),
                f"{s['psnr'][0]:.2f} +- {s['psnr'][1]:.2f}",
                f"{s['ssim'][0]:.3f} +- {s['ssim'][1]:.3f}",
                common.fmt(s["step_ms"], 1),
                common.fmt(s["render_ms"], 2),
                common.fmt(1e3 * kodak[kind]["render_seconds"], 1),
            ]
        )
    lines = [
        f"## Table 3 (natural images): {len(cfg['images'])} bundled photos, downscaled to <= "
        f"{cfg['max_pixels']} px, {cfg['steps']} Adam steps (lr {cfg['lr']}), width {cfg['width']}",
        "",
        common.markdown_table(headers, rows),
        "",
    ]
    if "siren_over_asmr_render" in summary:
        m, s = summary["siren_over_asmr_render"]
        ratio_k = kodak["siren"]["render_seconds"] / kodak["asmr"]["render_seconds"]
        lines.append(
            f"Render latency SIREN/ASMR: {m:.2f} +- {s:.2f} (per trained image), "
            f"{ratio_k:.2f} at {ks} (paper, server CPU: 3.07)."
        )
        lines.append("")
    lines += [
        "Per image:",
        "",
        common.markdown_table(
            ["image", "native", "trained at", "model", "PSNR", "SSIM", "render ms"],
            [
                [
                    r["image"],
                    "x".join(map(str, r["native_shape"])),
                    "x".join(map(str, r["shape"])),
                    r["model"],
                    f"{r['psnr']:.2f}",
                    f"{r['ssim']:.3f}",
                    f"{1e3 * r['render_seconds']:.2f}",
                ]
                for r in payload["rows"]
            ],
        ),
        "",
    ]
    lines += [
        "Paper (Kodak 512x768, 10k steps):",
        "",
        common.markdown_table(
            ["model", "params (K)", "MACs (K)", "PSNR dB", "SSIM", "server latency ms"],
            [[k.upper(), *map(str, v)] for k, v in PAPER.items()],
        ),
        "",
    ]
    lines.append(f"Runtime: {payload['runtime_seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args, cfg = common.parse_config(
        __doc__, get_config, argv,
        lambda p: p.add_argument("--resume", action="store_true", help="reuse the fits an interrupted run saved"),
    )
    return run(cfg, args.out, resume=args.resume)


if __name__ == "__main__":
    main()
