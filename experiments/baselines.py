"""The paper's other baselines beside ASMR: Table 2 (KiloNeRF-3, LoE-4), Figure 3 (KiloNeRF and
LoE over depths 3-7), Table 3 (MFN, WIRE) and Table 4 (Instant-NGP, KiloNeRF on audio).

Every table fits its baselines and ASMR in this one run, with the same steps and
schedule for every model of the table (each family at its paper's learning rate, as
stated in the rows); SIREN/FFN rows at the original tables' budgets are in
``table2_cameraman.md``, ``table3_natural.md`` and ``table4_audio.md``.

* Table 2 / Figure 3: Cameraman 512x512 gray, ``steps2`` Adam steps, cosine decay.
  KiloNeRF-L: 16x16 cells of SIREN MLPs of width 29 (Table 2's KiloNeRF-3: 252.7K
  params, 987 MACs; the paper 250K, 0.98K). LoE-L: width 31, tiles whose product is 512
  (LoE-4: tiles 4, 8, 8, 2, 128.6K params, 2.1K MACs; the paper 126K, 2.07K).
* Table 3: the bundled photos of ``table3_natural.py`` at its size and steps; MFN
  (FourierNet, 4 filters, width 208: 133.5K params) at lr 1e-2 and WIRE (width
  256 / sqrt 2 = 181 complex units, 3 hidden layers: 133.4K) at lr 5e-3, ASMR-4 at
  1e-4 (the table's).
* Table 4: the espeak-ng clip of ``table4_audio.py`` (32000 samples). Instant-NGP:
  16 levels x 2 features, tables of 2^11, growth to 32000, MLP 16-16 (33.1K params,
  0.9K MACs; the paper 32.9K, 1.0K) at lr 1e-2; KiloNeRF: 4 cells of width-63 SIRENs,
  depth 4 (33.0K, 8.3K; the paper 33.4K, 8.16K) at 1e-4; ASMR as in Table 4.

    python -m experiments.baselines                 # all parts (LoE at 512x512 dominates)
    python -m experiments.baselines --only table4   # one part; the results file keeps the others
    python -m experiments.baselines --smoke         # seconds

Results: experiments/results/baselines.{json,md}.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from asmr_jax import coords, data, models
from asmr_jax.asmr import ASMR
from asmr_jax.kilonerf import KiloNeRF
from asmr_jax.loe import LoE
from asmr_jax.mfn import MFN
from asmr_jax.ngp import InstantNGP
from asmr_jax.wire import WIRE
from experiments import common

NAME = "baselines"
PARTS = ("table2", "fig3", "table3", "table4")
PAPER = {  # params (K), MACs (K), PSNR dB as the paper reports them
    "table2": {"KiloNeRF-3": (250, 0.98, 34.35), "LoE-4": (126, 2.07, 33.27), "ASMR-4": (134, 1.35, 37.84),
               "ASMR-3": (67.8, 1.29, 31.44)},
    "table3": {"MFN": (134.7, 133.4, "27.57 +- 3.13"), "WIRE": (136.8, 135.9, "31.27 +- 2.06"),
               "ASMR": (134.7, 1.85, "33.09 +- 2.70")},
    "table4": {"Instant-NGP": (32.9, 1.0, "47.30 +- 3.74"), "KiloNeRF": (33.4, 8.16, "42.20 +- 2.39"),
               "ASMR": (33.8, 1.0, "61.66 +- 1.61")},
}


def get_config(arg: str | None = None) -> dict:
    common.check_config(arg, "smoke")
    cfg = dict(parts=PARTS, seed=0, steps2=1000, lr2=5e-4, fig3_depths=(3, 4, 5, 6, 7), size2=512,
               latency_repeats=3)
    if arg == "smoke":
        cfg.update(steps2=3, size2=32, fig3_depths=(3, 4), latency_repeats=1)
    return cfg


# LoE tiles on 512 = 2^9 per depth: product 512, every tile >= 2 (the paper's rule), the large
# tiles on the middle (wide) layers; LoE-4's (4, 8, 8, 2) gives the paper's ~126K parameters
LOE_TILES_512 = {3: (8, 8, 8), 4: (4, 8, 8, 2), 5: (4, 4, 8, 2, 2), 6: (2, 4, 4, 4, 2, 2), 7: (2, 2, 4, 4, 2, 2, 2)}


def loe_tiles(n: int, depth: int) -> tuple[int, ...]:
    """Tiles of an LoE-``depth`` on an axis of ``n`` samples (``LOE_TILES_512``, else balanced)."""
    if n == 512 and depth in LOE_TILES_512:
        return LOE_TILES_512[depth]
    fac = coords._balanced_factorizations(n, depth, 2)
    if fac is None:
        raise ValueError(f"{n} has no factorization into {depth} factors >= 2")
    return fac


def fit_rows(contenders, signal, steps, cosine, table, seed, repeats, log):
    rows = []
    for label, model, lr in contenders:
        cfg = {"steps": steps, "lr": lr, "seed": seed}
        res, row = common.fit_row(model, signal, cfg, repeats, cosine=cosine,
                                  chunk=max(1, min(100, steps // 10)))
        rows.append(dict(table=table, model=label, kind=model.kind, lr=lr, steps=steps, cosine=cosine, **row))
        log(f"{table:6s} {label:14s} {row['params']:>9,} params {row['paper_macs']:>10,.1f} MAC PSNR "
            f"{row['psnr']:6.2f} step {row['step_seconds'] * 1e3:8.1f} ms")
    return rows


def cameraman_contenders(cfg, depths):
    """Cameraman (cropped in smoke runs) and its KiloNeRF-L / LoE-L of each depth."""
    img = data.bundled_image("camera")
    smoke = cfg["size2"] != 512
    if smoke:
        img = data.crop(img, cfg["size2"])
    shape, n = img.shape, img.shape[0]
    out = []
    for depth in depths:
        out += [(f"KiloNeRF-{depth}", KiloNeRF.build(shape, 1, width=8 if smoke else 29, depth=depth,
                                                     grid=4 if smoke else 16), cfg["lr2"]),
                (f"LoE-{depth}", LoE.build(shape, 1, width=8 if smoke else 31, depth=depth,
                                           tiles=loe_tiles(n, depth)), cfg["lr2"])]
    return img, out, smoke


def table2(cfg, log):
    img, grid_models, smoke = cameraman_contenders(cfg, (3, 4))
    contenders = [grid_models[0], grid_models[3]]  # KiloNeRF-3, LoE-4
    contenders += [(f"ASMR-{levels}", models.build("asmr", img.shape, 1, width=16 if smoke else 256, levels=levels),
                    cfg["lr2"]) for levels in (4, 3)]
    return fit_rows(contenders, img.data, cfg["steps2"], True, "table2", cfg["seed"], cfg["latency_repeats"], log)


def fig3(cfg, log):
    img, contenders, _ = cameraman_contenders(cfg, cfg["fig3_depths"])
    return fit_rows(contenders, img.data, cfg["steps2"], True, "fig3", cfg["seed"], 1, log)


def table3(cfg, log):
    from experiments import table3_natural as t3

    base = t3.get_config("smoke" if cfg["size2"] != 512 else None)
    smoke = cfg["size2"] != 512
    rows = []
    for name in base["images"]:
        photo = t3.load_photo(name)
        shape = t3.target_shape(photo.shape[:2], base["max_pixels"])
        img = common.resize(photo, shape)
        contenders = [
            ("MFN", MFN(shape, 3, width=16 if smoke else 208, layers=4), 1e-2),
            ("WIRE", WIRE.build(shape, 3, width=16 if smoke else 256, depth=4), 5e-3),
            ("ASMR", t3.build("asmr", shape, base), base["lr"]),
        ]
        for r in fit_rows(contenders, img, base["steps"], False, "table3", cfg["seed"], cfg["latency_repeats"], log):
            rows.append(dict(r, image=name, shape=shape))
    return rows


def table4(cfg, log):
    from experiments import table4_audio as t4

    base = t4.get_config("smoke" if cfg["size2"] != 512 else None)
    clip = t4.load_clip(base)
    n = clip.shape[0]
    smoke = cfg["size2"] != 512
    growth = math.exp(math.log(n / 16) / 15)
    contenders = [
        ("Instant-NGP", InstantNGP((n,), 1, levels=16, features=2, log2_table=11, base_resolution=16,
                                   growth=growth, widths=(16, 16)), 1e-2),
        ("KiloNeRF", KiloNeRF.build((n,), 1, width=8 if smoke else 63, depth=4, grid=4), base["lr"]),
        ("ASMR", ASMR((n,), 1, bases=base["bases"], widths=base["width"]), base["lr"]),
    ]
    return fit_rows(contenders, clip, base["steps"], False, "table4", cfg["seed"], cfg["latency_repeats"], log)


def to_markdown(payload) -> str:
    rows = payload["rows"]
    out = []
    for part in payload["config"]["parts"]:
        rs = [r for r in rows if r["table"] == part]
        if not rs:
            continue
        paper = PAPER.get(part, {})
        steps = rs[0]["steps"]
        if part == "table3":
            out.append(f"### Table 3 rows: {len({r['image'] for r in rs})} bundled photos (as table3_natural), "
                       f"{steps} Adam steps")
            agg = {}
            for r in rs:
                agg.setdefault(r["model"], []).append(r)
            table = []
            for label, group in agg.items():
                p, s = common.mean_std([g["psnr"] for g in group])
                q, t = common.mean_std([g["ssim"] for g in group])
                pp = paper.get(label)
                table.append([label, common.fmt(group[0]["params"]), common.fmt(group[0]["paper_macs"], 0),
                              f"{group[0]['lr']:g}", f"{p:.2f} +- {s:.2f}", f"{q:.3f} +- {t:.3f}",
                              common.fmt(np.median([g["step_seconds"] for g in group]) * 1e3, 1),
                              f"{pp[2]} dB, {pp[0]}K params" if pp else "-"])
            out.append(common.markdown_table(["model", "params", "MAC/px", "lr", "PSNR dB", "SSIM", "step ms",
                                              "paper (Kodak)"], table))
            continue
        title = {"table2": f"### Table 2 rows: Cameraman 512x512, {steps} Adam steps, cosine",
                 "fig3": f"### Figure 3: KiloNeRF and LoE over depth, Cameraman 512x512, {steps} steps, cosine",
                 "table4": f"### Table 4 rows: espeak-ng clip (32000 samples), {steps} Adam steps"}[part]
        out.append(title)
        table = []
        for r in rs:
            pp = paper.get(r["model"])
            table.append([r["model"], common.fmt(r["params"]), common.fmt(r["paper_macs"], 1), f"{r['lr']:g}",
                          f"{r['psnr']:.2f}", common.fmt(r["ssim"], 3) if r.get("ssim") else "-",
                          common.fmt(r["step_seconds"] * 1e3, 1),
                          common.fmt(r["render_seconds"] * 1e3, 2) if r.get("render_seconds") else "-",
                          f"{pp[2]} dB, {pp[0]}K params, {pp[1]}K MAC" if pp else "-"])
        out.append(common.markdown_table(["model", "params", "MAC/px", "lr", "PSNR dB", "SSIM", "step ms",
                                          "render ms", "paper"], table))
    return "\n\n".join(out) + "\n"


def plot_fig3(rows, path: str) -> None:
    """MAC/pixel vs PSNR of the Figure 3 rows, circle area proportional to parameters (as the paper draws it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family, color in (("KiloNeRF", "C1"), ("LoE", "C2")):
        rs = sorted((r for r in rows if r["table"] == "fig3" and r["model"].startswith(family)),
                    key=lambda r: r["paper_macs"])
        if not rs:
            continue
        ax.plot([r["paper_macs"] for r in rs], [r["psnr"] for r in rs], color=color, lw=1)
        ax.scatter([r["paper_macs"] for r in rs], [r["psnr"] for r in rs], s=[r["params"] / 2000 for r in rs],
                   color=color, alpha=0.5, label=f"{family} (depth {rs[0]['model'].split('-')[1]}..)")
        for r in rs:
            ax.annotate(r["model"].split("-")[1], (r["paper_macs"], r["psnr"]), fontsize=7, ha="center")
    ax.set_xlabel("MAC per pixel (paper convention)")
    ax.set_ylabel("PSNR (dB)")
    steps = next((r["steps"] for r in rows if r["table"] == "fig3"), None)
    ax.set_title(f"Cameraman 512x512, {steps} steps; circle area ~ parameters")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    def extra(p):
        p.add_argument("--only", default=None, help=f"comma-separated parts of {PARTS}")

    args, cfg = common.parse_config(__doc__, get_config, argv, extra)
    if args.only:
        chosen = common.pick(args.only, PARTS, "--only")
        cfg["parts"] = tuple(p for p in PARTS if p in chosen)
    if args.steps is not None:
        cfg["steps2"] = cfg.pop("steps")
    t0 = time.perf_counter()
    rows = common.read_partial(args.out, NAME, cfg)
    done = {r["table"] for r in rows}
    for part in cfg["parts"]:
        if part in done:
            print(f"{part}: reusing the rows of an interrupted run")
            continue
        rows += globals()[part](cfg, lambda msg: print(msg, flush=True))
        common.write_partial(args.out, NAME, {"config": cfg, "rows": rows})
    # parts run separately accumulate in one results file (each row records its own budget)
    old = os.path.join(args.out, f"{NAME}.json")
    if os.path.isfile(old):
        with open(old) as f:
            kept = [r for r in json.load(f).get("rows", []) if r["table"] not in cfg["parts"]]
        rows = kept + rows
    cfg = dict(cfg, parts=tuple(p for p in PARTS if any(r["table"] == p for r in rows)))
    payload = dict(config=cfg, rows=rows, runtime_seconds=time.perf_counter() - t0)
    common.report(args.out, NAME, payload, to_markdown)
    if any(r["table"] == "fig3" for r in rows):
        plot_fig3(rows, os.path.join(args.out, "fig3_baselines.png"))
    common.remove_partial(args.out, NAME)
    return payload


if __name__ == "__main__":
    main()
