"""Paper Figures 2 and 3: MAC vs parameters (analytic) and MAC vs PSNR (measured).

* Figure 2 (``fig2_mac_params.png``): per-pixel MACs (the paper's convention,
  :func:`asmr_jax.macs.count`) against parameter count for SIREN and ASMR of depths 3-7
  on Cameraman's 512x512 grid (ASMR bases: :func:`figure_bases`, finest base 8), for each width in
  ``fig2_widths``, with the cost of a one-hidden-layer MLP of 32 units for reference (the
  paper's red dotted line). Analytic: takes a second.
* Figure 3 (``fig3_mac_psnr.png``): PSNR after a small, equal training budget against
  MACs for SIREN and ASMR of depths 3-7; marker area proportional to parameters. The
  paper fits 512x512 Cameraman at width 256 for 10k steps; on 2 shared CPU cores this
  runs Cameraman downscaled to ``fig3_size`` with width ``fig3_width``. Every model's
  output bias starts at the image's mean (``bias_to_mean``): at lr 1e-4 Adam moves a bias
  by ~1e-4 per step, and without it a 200-step budget mostly measures how fast a model
  reaches the mean gray level (ASMR-3 stayed at 8 dB that way).

    python -m experiments.figures            # ~10 min on 2 busy shared CPU cores
    python -m experiments.figures --smoke    # seconds
"""

from __future__ import annotations

import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from asmr_jax import coords, data, macs, models
from asmr_jax.fit import fit, set_output_bias
from experiments import common

NAME = "figures"


def get_config(arg: str | None = None) -> dict:
    """Figure settings; ``arg="smoke"`` keeps Figure 2 and shrinks Figure 3 to 2 depths."""
    common.check_config(arg, "smoke")
    cfg = dict(
        fig2_shape=(512, 512),
        finest=8,
        fig2_widths=(128, 256, 512),
        depths=(3, 4, 5, 6, 7),
        fig3_size=64,
        fig3_width=32,
        fig3_finest=8,
        fig3_depths=(3, 4, 5, 6, 7),
        steps=200,
        lr=1e-4,
        seed=0,
        bias_to_mean=True,  # output bias starts at the image mean (see the module docstring)
    )
    if arg == "smoke":
        cfg.update(fig3_size=16, fig3_width=8, fig3_finest=4, fig3_depths=(3, 4), steps=3)
    return cfg


def figure_bases(n: int, depth: int, finest: int = 8) -> tuple[int, ...]:
    """Bases for one axis of size ``n``: ``finest`` at the last level (as in the paper's
    ``[8,8,8]`` and ``[4,4,4,8]``), ``n / finest`` balanced over the other ``depth - 1``."""
    if n % finest:
        raise ValueError(f"axis size {n} is not a multiple of the finest base {finest}")
    if depth == 2:
        return (n // finest, finest)
    return tuple(coords.auto_bases((n // finest,), depth - 1)[0]) + (finest,)


def build(kind: str, n: int, width: int, depth: int, finest: int):
    """SIREN-``depth`` or ASMR-``depth`` (bases from :func:`figure_bases`) on an ``n x n`` gray grid."""
    bases = figure_bases(n, depth, finest) if kind == "asmr" else None
    return models.build(kind, (n, n), 1, width=width, depth=depth, bases=bases)


def mlp_macs(d: int, hidden: int, c: int) -> int:
    """MACs (weights + biases) of a one-hidden-layer MLP ``d -> hidden -> c``."""
    return d * hidden + hidden + hidden * c + c


def figure2(cfg: dict, out_dir: str) -> list[dict]:
    """Analytic params/MACs for every (model, width, depth); writes ``fig2_mac_params.png``."""
    points = []
    for width in cfg["fig2_widths"]:
        for kind in ("siren", "asmr"):
            for depth in cfg["depths"]:
                model = build(kind, cfg["fig2_shape"][0], width, depth, cfg["finest"])
                cost = macs.count(model)
                points.append(
                    dict(
                        kind=kind,
                        width=width,
                        depth=depth,
                        params=cost.params,
                        paper_macs=cost.paper_macs,
                        render_macs=cost.render_macs,
                        bases=getattr(model, "bases", (None,))[0],
                    )
                )
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"siren": "tab:blue", "asmr": "tab:orange"}
    styles = ["-", "--", ":"]
    for wi, width in enumerate(cfg["fig2_widths"]):
        for kind in ("siren", "asmr"):
            pts = [p for p in points if p["kind"] == kind and p["width"] == width]
            ax.plot(
                [p["params"] for p in pts],
                [p["paper_macs"] for p in pts],
                styles[wi % 3],
                marker="o",
                color=colors[kind],
                label=f"{kind.upper()} width {width}",
            )
            if width == cfg["fig2_widths"][min(1, len(cfg["fig2_widths"]) - 1)]:
                for p in pts:
                    ax.annotate(
                        str(p["depth"]),
                        (p["params"], p["paper_macs"]),
                        textcoords="offset points",
                        xytext=(3, 4),
                        fontsize=7,
                        color=colors[kind],
                    )
    ax.axhline(mlp_macs(2, 32, 1), color="red", ls=":", lw=1, label="1-hidden-layer MLP, 32 units")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("MACs per pixel (paper convention)")
    ax.set_title(f"Figure 2: depth 3-7 on a {cfg['fig2_shape'][0]}x{cfg['fig2_shape'][1]} grid (numbers: depth)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "fig2_mac_params.png"), dpi=120)
    plt.close(fig)
    return points


def figure3(cfg: dict, out_dir: str) -> list[dict]:
    """Fits SIREN and ASMR of each depth; writes ``fig3_mac_psnr.png``."""
    img = data.bundled_image("camera").data
    n = cfg["fig3_size"]
    img = common.resize(img, (n, n))
    points = []
    for depth in cfg["fig3_depths"]:
        for kind in ("siren", "asmr"):
            model = build(kind, n, cfg["fig3_width"], depth, cfg["fig3_finest"])
            params = model.init(jax.random.key(cfg["seed"]))
            if cfg["bias_to_mean"]:
                params = set_output_bias(params, img.reshape(-1, img.shape[-1]).mean(axis=0))
            res = fit(
                model, img, cfg["steps"], lr=cfg["lr"], params=params, key=jax.random.key(cfg["seed"]), progress=False
            )
            cost = macs.count(model)
            points.append(
                dict(
                    kind=kind,
                    depth=depth,
                    params=cost.params,
                    paper_macs=cost.paper_macs,
                    psnr=res.psnr,
                    step_seconds=res.step_seconds,
                    bases=getattr(model, "bases", (None,))[0],
                )
            )
            print(
                f"fig3 {kind:5s} depth {depth} params {cost.params:7d} MAC {cost.paper_macs:9.1f} PSNR {res.psnr:6.2f}",
                flush=True,
            )
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"siren": "tab:blue", "asmr": "tab:orange"}
    scale = 300.0 / max(p["params"] for p in points)
    for kind in ("siren", "asmr"):
        pts = [p for p in points if p["kind"] == kind]
        ax.plot([p["paper_macs"] for p in pts], [p["psnr"] for p in pts], color=colors[kind], lw=1, alpha=0.6)
        ax.scatter(
            [p["paper_macs"] for p in pts],
            [p["psnr"] for p in pts],
            s=[scale * p["params"] for p in pts],
            color=colors[kind],
            alpha=0.6,
            label=kind.upper(),
        )
        for p in pts:
            ax.annotate(
                str(p["depth"]),
                (p["paper_macs"], p["psnr"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xlabel("MACs per pixel (paper convention)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(
        f"Figure 3: Cameraman {n}x{n}, width {cfg['fig3_width']}, {cfg['steps']} steps (area ~ params, numbers: depth)",
        fontsize=9,
    )
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "fig3_mac_psnr.png"), dpi=120)
    plt.close(fig)
    return points


def run(cfg: dict, out_dir: str) -> dict:
    t_start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    fig2 = figure2(cfg, out_dir)
    fig3 = figure3(cfg, out_dir)
    payload = dict(config=cfg, fig2=fig2, fig3=fig3, runtime_seconds=time.perf_counter() - t_start)
    common.report(out_dir, NAME, payload, to_markdown)
    return payload


def to_markdown(payload) -> str:
    cfg = payload["config"]
    f2 = [
        [
            p["kind"].upper(),
            str(p["width"]),
            str(p["depth"]),
            str(list(p["bases"]) if p["bases"] else "-"),
            common.fmt(p["params"]),
            common.fmt(p["paper_macs"], 1),
            common.fmt(p["render_macs"], 1),
        ]
        for p in payload["fig2"]
    ]
    f3 = [
        [
            p["kind"].upper(),
            str(p["depth"]),
            str(list(p["bases"]) if p["bases"] else "-"),
            common.fmt(p["params"]),
            common.fmt(p["paper_macs"], 1),
            f"{p['psnr']:.2f}",
        ]
        for p in payload["fig3"]
    ]
    n = cfg["fig3_size"]
    return "\n".join(
        [
            f"## Figure 2: MACs vs parameters ({cfg['fig2_shape'][0]}x{cfg['fig2_shape'][1]} gray, analytic)",
            "",
            "![fig2](fig2_mac_params.png)",
            "",
            common.markdown_table(
                [
                    "model",
                    "width",
                    "depth",
                    "bases (both axes)",
                    "params",
                    "MAC/px (paper)",
                    "MAC/px (our render)",
                ],
                f2,
            ),
            "",
            f"## Figure 3: MACs vs PSNR (Cameraman {n}x{n}, width {cfg['fig3_width']}, {cfg['steps']} "
            f"Adam steps, lr {cfg['lr']})",
            "",
            "![fig3](fig3_mac_psnr.png)",
            "",
            common.markdown_table(["model", "depth", "bases (both axes)", "params", "MAC/px", "PSNR dB"], f3),
            "",
            f"Runtime: {payload['runtime_seconds']:.0f} s.",
        ]
    )


main = common.config_main(__doc__, get_config, run)


if __name__ == "__main__":
    main()
