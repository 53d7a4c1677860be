"""Paper video experiment (section 4.3), scaled to what runs here: ASMR vs SIREN on 3D signals.

The paper fits a 150x270x480 clip with a 10-level width-512 ASMR; no such clip is
available offline. Two real stand-ins:

* ``gif``: scikit-image's bundled ``no_time_for_that_tiny.gif``, 24 frames of 25x14 RGB
  (tiny).
* ``pan``: a synthetic camera pan over a real photo: ``frames`` crops of
  ``size x size`` pixels sliding diagonally across ``astronaut`` (downscaled to
  ``pan_source`` pixels), ``step`` pixels per frame. The motion is real image content
  but the camera path is made up.

Both models use 3D coordinates (time, row, column); ASMR's bases come from
``auto_bases(shape, levels)``; SIREN has the same depth and width (parameter counts
match to ~1%). Full-batch Adam, same steps for both.

    python -m experiments.video            # ~5 min on 2 shared CPU cores
    python -m experiments.video --smoke    # seconds
"""

from __future__ import annotations

import time

import numpy as np

from asmr_jax import data
from asmr_jax.asmr import ASMR
from asmr_jax.siren import SIREN
from experiments import common

NAME = "video"


def get_config(arg: str | None = None) -> dict:
    """Video settings; ``arg="smoke"`` uses 4 frames of the GIF and a 4x8x8 pan."""
    common.check_config(arg, "smoke")
    cfg = dict(
        clips=("gif", "pan"),
        gif_frames=None,  # None: all 24
        pan=dict(source="astronaut", pan_source=128, frames=16, size=32, step=4),
        levels=4,
        width=128,
        steps=200,
        lr=1e-4,
        latency_repeats=5,
        seed=0,
    )
    if arg == "smoke":
        cfg.update(
            gif_frames=4,
            pan=dict(source="astronaut", pan_source=32, frames=4, size=8, step=2),
            levels=3,
            width=16,
            steps=3,
            latency_repeats=1,
        )
    return cfg


def pan_video(source: str, pan_source: int, frames: int, size: int, step: int) -> np.ndarray:
    """``[frames, size, size, 3]``: a window sliding diagonally over a bundled photo."""
    img = data.bundled_image(source).data
    img = common.resize(img, (pan_source, pan_source))
    last = (frames - 1) * step + size
    if last > pan_source:
        raise ValueError(
            f"a pan of {frames} frames, {size} px, {step} px/frame needs a {last} px source, "
            f"got pan_source={pan_source}"
        )
    return np.stack([img[t * step : t * step + size, t * step : t * step + size] for t in range(frames)])


def load_clip(name: str, cfg: dict) -> np.ndarray:
    if name == "gif":
        clip = data.bundled_video().data
        return clip[: cfg["gif_frames"]] if cfg["gif_frames"] else clip
    if name == "pan":
        return pan_video(**cfg["pan"])
    raise ValueError(f"unknown clip {name!r}; expected 'gif' or 'pan'")


def run(cfg: dict, out_dir: str) -> dict:
    t_start = time.perf_counter()
    rows = []
    for clip_name in cfg["clips"]:
        clip = load_clip(clip_name, cfg)
        shape, c = clip.shape[:-1], clip.shape[-1]
        contenders = [
            ("ASMR", ASMR(shape, c, widths=cfg["width"], levels=cfg["levels"])),
            ("SIREN", SIREN(shape, c, widths=(cfg["width"],) * (cfg["levels"] - 1))),
        ]
        for label, model in contenders:
            res, row = common.fit_row(model, clip, cfg, cfg["latency_repeats"])
            lat = row["render_seconds"]
            rows.append(dict(clip=clip_name, shape=shape, model=label, **row))
            print(
                f"{clip_name:4s} {str(shape):14s} {label:6s} PSNR {res.psnr:6.2f} "
                f"step {res.step_seconds * 1e3:7.1f} ms render {lat * 1e3:7.2f} ms",
                flush=True,
            )
    payload = dict(config=cfg, rows=rows, runtime_seconds=time.perf_counter() - t_start)
    common.report(out_dir, NAME, payload, to_markdown)
    return payload


def to_markdown(payload) -> str:
    cfg = payload["config"]
    rows = [
        [
            r["clip"],
            "x".join(map(str, r["shape"])),
            r["model"],
            str(r["bases"] or "-"),
            common.fmt(r["params"]),
            common.fmt(r["paper_macs"], 0),
            f"{r['psnr']:.2f}",
            common.fmt(1e3 * r["step_seconds"], 1),
            common.fmt(1e3 * r["render_seconds"], 2),
        ]
        for r in payload["rows"]
    ]
    return "\n".join(
        [
            f"## Video: {cfg['levels']} levels / layers, width {cfg['width']}, {cfg['steps']} "
            f"full-batch Adam steps (lr {cfg['lr']})",
            "",
            common.markdown_table(
                [
                    "clip",
                    "TxHxW",
                    "model",
                    "bases (T; H; W)",
                    "params",
                    "MAC/px",
                    "PSNR dB",
                    "train ms/step",
                    "render ms",
                ],
                rows,
            ),
            "",
            "The paper reports no video numbers in its main text (150x270x480 clip, 10 levels, width 512).",
            "",
            f"Runtime: {payload['runtime_seconds']:.0f} s.",
        ]
    )


main = common.config_main(__doc__, get_config, run)


if __name__ == "__main__":
    main()
