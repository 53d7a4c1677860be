"""Functa compression against the classical codecs, in both accountings, with Bjontegaard deltas.

On the same held-out images, every classical codec Pillow can write here (JPEG 4:4:4 and
4:2:0, WebP, AVIF = AV1 intra, HEIC = HEVC intra, JPEG XL; :mod:`experiments.codecs`)
runs a quality sweep; each point is a row with ``accounting`` ``file`` (whole file
bytes) and ``payload`` (the codec's own bitstream, container boxes and headers
excluded). Functa rows come from ``rate_distortion`` results (``--functa``, one per image set): one file
per image (``file``), its 12-byte header removed (``payload``), and one container for
all images (``container``). For each functa front and each classical codec:
BD-PSNR and BD-rate (:func:`asmr_jax.metrics.bd_psnr`, :func:`~asmr_jax.metrics.bd_rate`;
piecewise-cubic in log rate, over the range both cover), payload against payload and
file against file.

Image sets: ``patches`` (the 136 held-out 32x32 photo patches the functa was tested on)
and ``lfw`` (the bundled LFW faces' test split, resized to 32x32, gray: the codecs get
the gray value in all three channels, PSNR is measured on the decoded mean).

    python -m experiments.codec_comparison                       # ~2 min: classical codecs, both sets
    python -m experiments.codec_comparison --functa experiments/results/rd_20min/rate_distortion.json

Writes ``experiments/results/codec_comparison.{json,md}`` and one plot per accounting,
``codec_comparison_{file,payload}.png``. A codec whose plugin is missing is listed under
``skipped`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import numpy as np

from experiments import codecs
from experiments.common import RESULTS_DIR, check_config, command_line

NAME = "codec_comparison"


def get_config(arg: str | None = None) -> dict:
    """Defaults of the run; ``"quick"``: 8 images per set."""
    check_config(arg, "quick")
    return {"sets": "patches,lfw", "limit": 8 if arg == "quick" else None}


def load_set(name: str) -> np.ndarray:
    """``[n, 32, 32, C]`` on ``[0, 1]``: the photo patches' or the LFW faces' test split."""
    from asmr_jax.datasets import load_dataset

    ds = load_dataset(name, "test", 32)
    return ds.get(np.arange(len(ds)))


def classical_rows(images: np.ndarray, image_set: str, names) -> list[dict]:
    """Two rows (file, payload) per codec and quality, PSNR/SSIM of the decoded pixels."""
    from asmr_jax import metrics
    from asmr_jax.data import to_uint8

    pixels = images.shape[1] * images.shape[2]
    u8 = to_uint8(images)
    rows = []
    for name in names:
        for q in codecs.CODECS[name][2]:
            files, pays, psnrs, ssims = [], [], [], []
            for img, target in zip(u8, images):
                data = codecs.encode(name, img, q)
                out = codecs.decode(data, images.shape[-1])
                files.append(len(data))
                pays.append(codecs.payload(name, data))
                psnrs.append(metrics.psnr(out, target))
                ssims.append(metrics.ssim(out, target))
            common = {"codec": name, "quality": q, "set": image_set, "images": len(images),
                      "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}
            rows.append({**common, "accounting": "file", "bpp": 8 * float(np.mean(files)) / pixels})
            rows.append({**common, "accounting": "payload", "bpp": 8 * float(np.mean(pays)) / pixels})
    return rows


def functa_rows(result: dict, image_set: str) -> list[dict]:
    """Accounting rows of a ``rate_distortion`` result's functa points."""
    rows = []
    for r in result["rows"]:
        if not r["codec"].endswith("-functa"):
            continue
        common = {"codec": r["codec"], "set": image_set, "images": r["images"], "latent_dim": r["latent_dim"],
                  "bits": r["bits"], "refine": r["refine"], "psnr": r["psnr"], "ssim": r["ssim"]}
        if r["file"] == "single":
            rows.append({**common, "accounting": "file", "bpp": r["bpp"]})
            rows.append({**common, "accounting": "payload", "bpp": r["payload_bpp"]})
        else:
            rows.append({**common, "accounting": "container", "bpp": r["bpp"]})
    return rows


def front(rows: list[dict]) -> list[dict]:
    """The points no other point beats in both rate and PSNR, by rising rate."""
    out, best = [], -np.inf
    for r in sorted(rows, key=lambda r: (r["bpp"], -r["psnr"])):
        if r["psnr"] > best:
            out.append(r)
            best = r["psnr"]
    return out


TARGET_RANGE = (0.3, 1.0)  # bpp: where the functa fronts are held against the classical codecs
GAP_RATES = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)  # bpp of the fixed-rate PSNR differences


def bd_rows(rows: list[dict]) -> list[dict]:
    """BD-PSNR / BD-rate of each functa front against each classical codec (same set, same accounting)."""
    from asmr_jax import metrics

    out = []
    for image_set in sorted({r["set"] for r in rows}):
        for acc in ("payload", "file"):
            def pick(c, image_set=image_set, acc=acc):
                return front([r for r in rows if r["set"] == image_set and r["codec"] == c and r["accounting"] == acc])

            ours = sorted({r["codec"] for r in rows if r["codec"].endswith("-functa") and r["set"] == image_set})
            refs = sorted({r["codec"] for r in rows if not r["codec"].endswith("-functa") and r["set"] == image_set})
            for codec in ours:
                a = pick(codec)
                for ref in refs:
                    b = pick(ref)
                    row = {"codec": codec, "reference": ref, "accounting": acc, "set": image_set}
                    curves = ([r["bpp"] for r in b], [r["psnr"] for r in b], [r["bpp"] for r in a],
                              [r["psnr"] for r in a])
                    for key, fn in (("bd_psnr_db", metrics.bd_psnr), ("bd_rate_pct", metrics.bd_rate),
                                    ("bd_psnr_target_db", partial(metrics.bd_psnr, rate_range=TARGET_RANGE))):
                        try:
                            row[key] = fn(*curves)
                        except ValueError as e:  # no overlap: said, not hidden
                            row[key], row[f"{key}_why"] = None, str(e)
                    gaps = {}
                    for rate in GAP_RATES:  # PSNR difference at fixed rates where both curves reach
                        ours_at, ref_at = metrics.psnr_at(*curves[2:], rate), metrics.psnr_at(*curves[:2], rate)
                        gaps[f"{rate:g}"] = None if None in (ours_at, ref_at) else ours_at - ref_at
                    row["gap_db_at_bpp"] = gaps
                    out.append(row)
    return out


def markdown(payload: dict) -> str:
    from experiments.common import markdown_table

    lines = []
    for image_set in sorted({r["set"] for r in payload["rows"]}):
        lines.append(f"### {image_set} ({next(r['images'] for r in payload['rows'] if r['set'] == image_set)} "
                     f"test images)\n")
        body = []
        for codec in dict.fromkeys(r["codec"] for r in payload["rows"] if r["set"] == image_set):
            for acc in ("payload", "file", "container"):
                pts = front([r for r in payload["rows"] if r["set"] == image_set and r["codec"] == codec
                             and r["accounting"] == acc])
                if pts:
                    body.append([codec, acc, " ".join(f"{r['bpp']:.3f}->{r['psnr']:.2f}" for r in pts)])
        lines += [markdown_table(["codec", "accounting", "front: bpp -> PSNR dB"], body), ""]
    if payload["bd"]:
        fmt = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
        lines += ["Bjontegaard deltas of the functa fronts (positive BD-PSNR / negative BD-rate: functa better; "
                  "'-': the curves do not overlap):", "",
                  markdown_table(["set", "codec", "reference", "accounting", "BD-PSNR dB", "BD-rate %",
                                  f"BD-PSNR dB, {TARGET_RANGE[0]:g}-{TARGET_RANGE[1]:g} bpp"],
                                 [[r["set"], r["codec"], r["reference"], r["accounting"], fmt(r["bd_psnr_db"]),
                                   fmt(r["bd_rate_pct"]), fmt(r.get("bd_psnr_target_db"))]
                                  for r in payload["bd"]]), ""]
        lines += ["PSNR difference (dB, functa minus codec; fronts interpolated piecewise-cubic in log rate; '-': "
                  "a curve does not reach that rate) at fixed rates:", "",
                  markdown_table(["set", "codec", "reference", "accounting", *(f"{b:g} bpp" for b in GAP_RATES)],
                                 [[r["set"], r["codec"], r["reference"], r["accounting"],
                                   *(fmt(r.get("gap_db_at_bpp", {}).get(f"{b:g}")) for b in GAP_RATES)]
                                  for r in payload["bd"]]), ""]
    if payload["skipped"]:
        lines.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in payload["skipped"].items()))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], accounting: str, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r["set"] for r in rows})
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, image_set in zip(axes[0], sets):
        for codec in dict.fromkeys(r["codec"] for r in rows if r["set"] == image_set):
            accs = (accounting, "container") if codec.endswith("-functa") and accounting == "file" else (accounting,)
            for acc in accs:
                pts = front([r for r in rows if r["set"] == image_set and r["codec"] == codec
                             and r["accounting"] == acc])
                if pts:
                    ax.plot([r["bpp"] for r in pts], [r["psnr"] for r in pts], "o-" if acc != "container" else "o--",
                            ms=3, label=codec + (" (container)" if acc == "container" else ""))
        ax.set_xscale("log")
        ax.set_xlabel(f"bits per pixel ({accounting} bytes)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{image_set}, 32x32, {accounting} accounting")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="patches,lfw", help="image sets: patches, lfw")
    p.add_argument("--functa", default=None,
                   help="comma-separated rate_distortion.json files; each one's functa rows join the table of "
                        "the image set it measured (its dataset: patches, or lfw at resolution 32)")
    p.add_argument("--codecs", default=",".join(codecs.CODECS), help="classical codecs to run")
    p.add_argument("--limit", type=int, default=None, help="images per set (default all)")
    p.add_argument("--out", default=RESULTS_DIR, help="results folder")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    names = [c for c in args.codecs.split(",") if c]
    unknown = sorted(set(names) - set(codecs.CODECS))
    if unknown:
        p.error(f"unknown codecs {unknown}; known: {', '.join(codecs.CODECS)}")
    skipped = {n: why for n in names if (why := codecs.available(n))}
    names = [n for n in names if n not in skipped]
    rows = []
    for image_set in [s for s in args.sets.split(",") if s]:
        images = load_set(image_set)[: args.limit]
        rows += classical_rows(images, image_set, names)
        print(f"{image_set}: {len(images)} images, codecs {', '.join(names)} [{time.perf_counter() - t0:.0f} s]",
              flush=True)
    for source in [s for s in (args.functa or "").split(",") if s]:
        with open(source) as f:
            result = json.load(f)
        image_set = result.get("dataset", "patches")
        if image_set not in args.sets.split(","):
            p.error(f"--functa {source} measured {image_set!r} images; --sets is {args.sets!r}")
        if result.get("resolution", 32) != 32:
            p.error(f"--functa {source} measured {result['resolution']}x{result['resolution']} images; the "
                    f"codecs here see 32x32 (meta-train at resolution=32)")
        rows += functa_rows(result, image_set)
    payload = {"rows": rows, "bd": bd_rows(rows), "skipped": skipped, "functa_source": args.functa,
               "command": command_line("experiments.codec_comparison", argv),
               "seconds": time.perf_counter() - t0}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump(payload, f, indent=1)
    md = markdown(payload)
    with open(os.path.join(args.out, f"{NAME}.md"), "w") as f:
        f.write(f"Run: `{payload['command']}` ({payload['seconds'] / 60:.1f} min)\n\n" + md)
    for acc in ("payload", "file"):
        plot(rows, acc, os.path.join(args.out, f"{NAME}_{acc}.png"))
    print(md)
    print(f"wrote {args.out}/{NAME}.json, .md, _payload.png, _file.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
