"""Rate-distortion of functa compression (COIN++ style) against JPEG and WebP.

On the bundled 32x32 RGB test patches (``asmr_jax.datasets``, ``patches``/``test``:
coffee and chelsea photos, never trained on), for ASMR-functa and SIREN-functa at
(about) equal parameter count, several latent sizes ``D`` and bit depths ``b``:

1. meta-train a small functa per (network, D) on the train patches (or reuse the
   checkpoint in ``--workdir``);
2. fit the codec (quantizer + symbol tables) on latents of ``--codec-images`` train
   patches (what ``asmr codec-fit`` does);
3. for every test patch: fit its latent (``k`` inner steps), optionally refine it
   through the straight-through quantizer, write the real file (header + range-coded
   payload + CRC), read it back, decode, render, PSNR.

Bits per pixel are counted from the file bytes (header included) and from the payload
alone. JPEG and WebP (Pillow, quality sweeps) run on the same images in the same run.
COIN++'s CIFAR-10 numbers are drawn as a reference (other images, far longer training).

Writes ``experiments/results/rate_distortion.{json,md,png}``::

    python experiments/rate_distortion.py --quick   # trains 2 tiny functas (100 steps) first
    python experiments/rate_distortion.py           # ~25 min here with training (2 shared cores)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
# COIN++ (Dupont et al., 2022), CIFAR-10, 32x32: (bpp, PSNR dB); different images, a reference only
COINPP_CIFAR10 = ((0.55, 24.2), (1.10, 27.0), (2.20, 30.5), (4.06, 33.7))
JPEG_QUALITIES = (1, 5, 10, 20, 30, 50, 70, 85, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 50, 70, 85, 95)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--quick", action="store_true", help="small budget: one latent size, 3 bit depths, 48 images")
    p.add_argument("--models", default="asmr,siren", help="comma-separated network families (default asmr,siren)")
    p.add_argument("--latent-dims", default=None, help="comma-separated latent sizes D (default 32; quick 64)")
    p.add_argument("--bits", default=None, help="comma-separated bit depths (default 2,3,4,6,8; quick 3,4,6)")
    p.add_argument("--test-images", type=int, default=None, help="test patches used (default all 136)")
    p.add_argument("--codec-images", type=int, default=None, help="train patches to fit the codec (default 1024)")
    p.add_argument(
        "--train-steps", type=int, default=None, help="meta-training steps per model (default 300; quick 100)"
    )
    p.add_argument("--width", type=int, default=64, help="hidden width (default 64; 4 layers each)")
    p.add_argument("--lr", type=float, default=1e-3, help="outer Adam rate (default 1e-3)")
    p.add_argument("--lr-scale", type=float, default=1.0, help="scale of the meta-SGD inner rates (functa: 1)")
    p.add_argument("--refine", type=int, default=10, help="straight-through refinement steps (default 10; 0 = off)")
    p.add_argument("--timing-images", type=int, default=8, help="images timed one by one per setting (default 8)")
    p.add_argument("--workdir", default="outputs/compress/rd", help="checkpoints (reused if present)")
    p.add_argument("--out", default=RESULTS, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    quick = args.quick
    args.models = [m for m in args.models.split(",") if m]
    args.latent_dims = [int(x) for x in (args.latent_dims or ("64" if quick else "32")).split(",")]
    args.bits = [int(x) for x in (args.bits or ("3,4,6" if quick else "2,3,4,6,8")).split(",")]
    args.test_images = args.test_images or (48 if quick else 10**9)
    args.codec_images = args.codec_images or (256 if quick else 1024)
    args.train_steps = args.train_steps if args.train_steps is not None else (100 if quick else 300)
    return args


def checkpoint(args, kind: str, dim: int) -> str:
    """Trains (or reuses) a functa for ``kind``/``dim``; returns the checkpoint folder."""
    from meta import functa, train

    path = os.path.join(
        args.workdir, f"{kind}-w{args.width}-d{dim}-s{args.train_steps}-lr{args.lr:g}-ls{args.lr_scale:g}"
    )
    if os.path.isdir(os.path.join(path, functa.CHECKPOINTS)):
        print(f"reusing {path}")
        return path
    t0 = time.perf_counter()
    train.train(
        workdir=path,
        dataset="patches",
        resolution=32,
        model=kind,
        width=args.width,
        depth=4,
        levels=4,
        latent_dim=dim,
        inner_steps=3,
        lr_scale=args.lr_scale,
        batch_size=16,
        steps=args.train_steps,
        lr=args.lr,
        eval_every=max(args.train_steps, 1),
        eval_images=32,
        checkpoint_every=max(args.train_steps, 1),
        progress=False,
        plots=False,
        log=lambda *a, **k: None,
    )
    print(f"trained {path} in {time.perf_counter() - t0:.0f} s")
    return path


def psnr_each(pred, target) -> np.ndarray:
    """``[n]`` PSNR in dB of clipped ``pred`` against ``target`` (both ``[n, H, W, C]``)."""
    pred = np.clip(np.asarray(pred, np.float64), 0, 1)
    mse = ((pred - np.asarray(target, np.float64)) ** 2).reshape(len(pred), -1).mean(1)
    return 10 * np.log10(1 / np.maximum(mse, 1e-20))


def measure(args, net, codec, test_latents, test_images, refine: int) -> dict:
    """Writes, reads back and decodes every test image's file; times single-image encode/decode."""
    from meta import compress as C

    pixels = int(np.prod(net.shape))
    latents = C.refine(test_latents, test_images, net.render_jax, codec.quantizer, refine) if refine else test_latents
    sizes, payloads, decoded = [], [], []
    for z in latents:
        payload, _ = codec.encode_latent(z)
        data = C.pack(C.Header(net.id, codec.codec_id, codec.bits, net.dim, net.shape, net.channels, payload))
        decoded.append(codec.decode_latent(C.unpack(data).payload))  # what a decoder reads back from the file
        sizes.append(len(data))
        payloads.append(len(payload))
    decoded = np.stack(decoded)
    np.testing.assert_array_equal(decoded, codec.quantizer.round_trip(latents))  # the coder is lossless
    q_psnr = psnr_each(net.render_many(decoded), test_images)
    # one image at a time, as `asmr encode` / `asmr decode` do (a first warm-up call compiles)
    enc_t, dec_t = [], []
    for i in range(args.timing_images + 1):
        t = time.perf_counter()
        enc = C.encode(
            test_images[i % len(test_images)],
            codec,
            net.id,
            net.fit,
            net.render,
            refine_steps=refine,
            render_jax=net.render_jax,
        )
        t1 = time.perf_counter()
        C.decode(enc.data, codec, net.id, net.render)
        t2 = time.perf_counter()
        if i:
            enc_t.append(t1 - t)
            dec_t.append(t2 - t1)
    return {
        "bits": codec.bits,
        "refine": refine,
        "images": len(test_images),
        "bpp": 8 * float(np.mean(sizes)) / pixels,
        "payload_bpp": 8 * float(np.mean(payloads)) / pixels,
        "psnr": float(np.mean(q_psnr)),
        "encode_ms": 1e3 * statistics.median(enc_t),
        "decode_ms": 1e3 * statistics.median(dec_t),
        "symbol_table": "shared" if codec.symbols.shared else "per-dim",
    }


def functa_rows(args, kind, dim, train_images, test_images):
    """One row per bit depth for one checkpoint."""
    from meta import compress as C

    net = C.MetaNetwork(checkpoint(args, kind, dim))
    train_latents, _ = net.fit_many(train_images)
    t0 = time.perf_counter()
    test_latents, _ = net.fit_many(test_images)
    float_psnr = psnr_each(net.render_many(test_latents), test_images)
    rows = []
    for bits in args.bits:
        codec = C.fit_codec(train_latents, bits, net.id)
        for refine in sorted({0, args.refine}):
            rows.append(measure(args, net, codec, test_latents, test_images, refine))
            r = rows[-1]
            r.update(
                codec=f"{kind}-functa",
                latent_dim=dim,
                psnr_unquantized=float(np.mean(float_psnr)),
                network_params=int(net.meta.model.num_params()),
                shared_params=int(net.meta.num_params()),
                checkpoint=net.path,
            )
            print(
                f"{r['codec']:>13} D={dim:<4} b={bits:<2} refine {refine:<3} {r['bpp']:6.3f} bpp "
                f"({r['payload_bpp']:.3f} payload) {r['psnr']:6.2f} dB (float "
                f"{r['psnr_unquantized']:.2f})  "
                f"enc {r['encode_ms']:.0f} ms dec {r['decode_ms']:.0f} ms  "
                f"[{time.perf_counter() - t0:.0f} s]"
            )
    return rows


def pillow_rows(fmt: str, qualities, images):
    from PIL import Image

    from asmr_jax.io import to_uint8

    rows = []
    pixels = images.shape[1] * images.shape[2]
    for q in qualities:
        sizes, psnrs, enc_t, dec_t = [], [], [], []
        for img in images:
            buf = io.BytesIO()
            t = time.perf_counter()
            Image.fromarray(to_uint8(img)).save(buf, format=fmt, quality=q, **({"method": 6} if fmt == "WEBP" else {}))
            t1 = time.perf_counter()
            back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255.0
            t2 = time.perf_counter()
            sizes.append(len(buf.getvalue()))
            psnrs.append(psnr_each(back[None], img[None])[0])
            enc_t.append(t1 - t)
            dec_t.append(t2 - t1)
        rows.append(
            {
                "codec": fmt.lower(),
                "quality": q,
                "images": len(images),
                "bpp": 8 * float(np.mean(sizes)) / pixels,
                "payload_bpp": None,
                "psnr": float(np.mean(psnrs)),
                "encode_ms": 1e3 * statistics.median(enc_t),
                "decode_ms": 1e3 * statistics.median(dec_t),
            }
        )
    return rows


def markdown(rows, header_bytes) -> str:
    lines = [
        "| codec | setting | bpp (file) | bpp (payload) | PSNR dB | PSNR before quant. | encode ms | decode ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        setting = (
            f"D={r['latent_dim']}, {r['bits']} bits, refine {r['refine']}" if "bits" in r else f"quality {r['quality']}"
        )
        pay = "-" if r.get("payload_bpp") is None else f"{r['payload_bpp']:.3f}"
        unq = f"{r['psnr_unquantized']:.2f}" if "psnr_unquantized" in r else "-"
        lines.append(
            f"| {r['codec']} | {setting} | {r['bpp']:.3f} | {pay} | {r['psnr']:.2f} | {unq} | "
            f"{r['encode_ms']:.1f} | {r['decode_ms']:.2f} |"
        )
    lines.append("")
    lines.append(
        "COIN++ on CIFAR-10 (reference, other images): "
        + ", ".join(f"{p} dB at {b} bpp" for b, p in COINPP_CIFAR10)
        + "."
    )
    lines.append(f"Functa file = {header_bytes}-byte header/checksum + payload.")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups = {}
    refine = max((r.get("refine", 0) for r in rows), default=0)
    for r in rows:
        if r.get("refine", refine) != refine:
            continue  # the plot shows the refined setting; the table has both
        key = (r["codec"], r.get("latent_dim"))
        groups.setdefault(key, []).append(r)
    markers = {"asmr-functa": "o", "siren-functa": "s", "jpeg": "^", "webp": "v"}
    for (codec, dim), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["bpp"])
        label = codec if dim is None else f"{codec} D={dim}"
        (line,) = ax.plot([r["bpp"] for r in rs], [r["psnr"] for r in rs], marker=markers.get(codec, "."), label=label)
        if dim is not None:
            ax.plot([r["payload_bpp"] for r in rs], [r["psnr"] for r in rs], ls=":", color=line.get_color(), alpha=0.6)
    b, p = zip(*COINPP_CIFAR10)
    ax.plot(b, p, "k*--", label="COIN++ CIFAR-10 (reference)")
    ax.set_xlabel("bits per pixel (solid: whole file; dotted: functa payload only)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_xscale("log")
    ticks = [0.1, 0.2, 0.5, 1, 2, 5, 10]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"32x32 test patches (coffee, chelsea); functa refine {refine} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    from PIL import features

    from asmr_jax.datasets import load_dataset
    from meta import compress as C

    t_start = time.perf_counter()
    test = load_dataset("patches", "test", 32)
    train = load_dataset("patches", "train", 32)
    test_images = test.get(np.arange(min(len(test), args.test_images)))
    idx = np.linspace(0, len(train) - 1, min(len(train), args.codec_images)).astype(int)
    train_images = train.get(idx)
    print(
        f"{len(test_images)} test patches, codec fitted on {len(train_images)} train patches; models "
        f"{args.models}, "
        f"D {args.latent_dims}, bits {args.bits}, {args.train_steps} meta-training steps, refine "
        f"{args.refine}"
    )

    rows = []
    for kind in args.models:
        for dim in args.latent_dims:
            rows += functa_rows(args, kind, dim, train_images, test_images)
    rows += pillow_rows("JPEG", JPEG_QUALITIES, test_images)
    webp = features.check("webp")
    if webp:
        rows += pillow_rows("WEBP", WEBP_QUALITIES, test_images)
    seconds = time.perf_counter() - t_start

    os.makedirs(args.out, exist_ok=True)
    header_bytes = C.header_size(2)
    md = markdown(rows, header_bytes)
    print(md)
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "test_images": len(test_images),
        "codec_images": len(train_images),
        "webp_available": webp,
        "header_bytes": header_bytes,
        "total_seconds": seconds,
        "rows": rows,
        "coinpp_cifar10_reference": [{"bpp": b, "psnr": p} for b, p in COINPP_CIFAR10],
        "machine": f"{os.cpu_count()} CPU cores (shared)",
    }
    with open(os.path.join(args.out, "rate_distortion.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.out, "rate_distortion.md"), "w") as f:
        f.write(
            f"Run: `python experiments/rate_distortion.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" ({seconds / 60:.1f} min; checkpoints already in --workdir are reused, not retrained)\n\n" + md
        )
    plot(rows, os.path.join(args.out, "rate_distortion.png"))
    print(f"wrote {args.out}/rate_distortion.json, .md, .png ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
