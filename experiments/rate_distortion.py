"""Rate-distortion of functa compression (COIN++ style) against JPEG and WebP.

On the bundled 32x32 RGB test patches (``asmr_jax.datasets``, ``patches``/``test``:
coffee and chelsea photos, never trained on; or the test split of the config's dataset,
e.g. ``--config cpu:dataset=lfw,resolution=32`` for the LFW faces), for ASMR-functa and SIREN-functa of
equal shared parameter count (config ``--config``, default ``cpu``), a ladder of
latent sizes ``D`` and bit depths ``b``:

1. meta-train one functa per (network, D) for the same wall-clock budget
   (``--budget-minutes`` of training each, compilation excluded; resumable: an
   interrupted ladder continues where it stopped, finished runs are reused), the outer
   rate decaying by a cosine over a step count planned from a 20 s timing probe
   (``--lr-decay none``: constant);
2. fit the codec (quantizer + symbol tables) on latents of ``--codec-images`` train
   patches, what ``asmr codec-fit`` does (test patches are checked to be absent from
   them); ``--quantizer pca`` (default) quantizes the latents' principal components with
   one cell width, ``dim`` each latent dimension over its own +-3 std;
3. for every test patch: fit its latent (``k`` inner steps), optionally refine it
   through the straight-through quantizer, write the real bytes, one file per image
   and one container for all, read them back, decode, and measure PSNR and SSIM on the
   decoded pixels.

Bits per pixel are counted from the file bytes (headers included) and from the payload
alone (what COIN++ reports). JPEG (4:4:4 and 4:2:0) and WebP (Pillow, quality sweeps)
run on the same images in the same run. COIN++'s CIFAR-10 numbers are drawn as a
reference (other images, far longer training).

Writes ``experiments/results/rate_distortion.{json,md,png}``::

    python -m experiments.rate_distortion --quick                 # 30 s of training per model
    python -m experiments.rate_distortion --models asmr --train-only   # the ASMR ladder only (background)
    python -m experiments.rate_distortion                         # 4 x 10 min per family, then encodes
    python -m experiments.rate_distortion --models asmr --latent-dims 192 --budget-minutes 25 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from experiments.common import RESULTS_DIR, check_config

# COIN++ (Dupont et al., 2022) on CIFAR-10 test images (32x32), payload bpp and PSNR dB, as in the COIN++
# repository's results/cifar10/coinpp.json (rounded); other images, a reference only
COINPP_CIFAR10 = ((0.548, 24.22), (1.099, 27.03), (1.647, 28.90), (2.195, 30.45), (3.294, 32.42), (4.057, 33.69),
                  (5.406, 35.26))
JPEG_QUALITIES = (1, 5, 10, 20, 30, 50, 70, 85, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 50, 70, 85, 95)


def get_config(arg: str | None = None) -> dict:
    """Every setting's default; ``"quick"``: a small budget (one latent size, 3 bit depths, 48 images)."""
    check_config(arg, "quick")
    quick = arg == "quick"
    return {"models": "asmr,siren", "latent_dims": "64" if quick else "32,64,128,256",
            "bits": "6,8,10" if quick else "4,5,6,7,8,9,10", "quantizer": "pca",
            "test_images": 48 if quick else 10**9, "codec_images": 256 if quick else 1024, "config": "cpu",
            "budget_minutes": 0.5 if quick else 10.0, "lr": 3e-4, "lr_decay": "cosine", "eval_every": 1000,
            "refine": 10, "rate_weights": "", "timing_images": 8, "workdir": "outputs/compress/rd"}


def parse_args(argv=None):
    from meta.quantize import QUANTIZER_MODES

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--quick", action="store_true", help="small budget: one latent size, 3 bit depths, 48 images")
    p.add_argument("--models", default=None, help="comma-separated network families (default asmr,siren)")
    p.add_argument("--latent-dims", default=None,
                   help="comma-separated latent sizes D (default 32,64,128,256; quick 64)")
    p.add_argument("--bits", default=None, help="comma-separated quantizer resolutions, 2**b cells over the widest "
                   "coordinate's +-3 std (default 4,5,6,7,8,9,10; quick 6,8,10)")
    p.add_argument("--quantizer", default=None, choices=QUANTIZER_MODES,
                   help="what is quantized (asmr codec-fit --quantizer; default pca)")
    p.add_argument("--test-images", type=int, default=None, help="test patches used (default all 136)")
    p.add_argument("--codec-images", type=int, default=None, help="train patches to fit the codec (default 1024)")
    p.add_argument("--config", default=None, help="meta-training config (meta/configs; default cpu: ASMR w128 "
                   "L4, SIREN at equal shared params)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock meta-training budget per (model, D) (default 10; quick 0.5)")
    p.add_argument("--lr", type=float, default=None, help="outer Adam rate (default 3e-4, the cpu config's)")
    p.add_argument("--lr-decay", default=None, choices=("none", "cosine"),
                   help="outer rate schedule over the budget (default cosine: lr -> lr/100; none: constant)")
    p.add_argument("--eval-every", type=int, default=None, help="test evaluation / checkpoint period in steps")
    p.add_argument("--train-only", action="store_true", help="meta-train the ladder, then stop (no encoding)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the table and plot from --out's rate_distortion.json (nothing trained or encoded)")
    p.add_argument("--refine", type=int, default=None, help="straight-through refinement steps (default 10; 0 = off)")
    p.add_argument("--rate-weights", default=None,
                   help="comma-separated rate weights of extra rate-aware refinements (MSE + w x bpp; default "
                        "none: distortion-only refinement)")
    p.add_argument("--timing-images", type=int, default=None, help="images timed one by one per setting (default 8)")
    p.add_argument("--workdir", default=None, help="checkpoints (reused if present)")
    p.add_argument("--out", default=RESULTS_DIR, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    for key, value in get_config("quick" if args.quick else None).items():  # flags not given
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    args.latent_dims = [int(x) for x in str(args.latent_dims).split(",")]
    args.bits = [int(x) for x in str(args.bits).split(",")]
    args.rate_weights = [float(x) for x in str(args.rate_weights).split(",") if x]
    return args


BUDGET = "budget.json"
PROBE_SECONDS = 20.0  # timing run before a decayed schedule is planned (at most; a tenth of short budgets)


def train_config(args, kind: str, dim: int, **fields):
    """The :class:`meta.config.TrainConfig` of the ladder's run for ``kind``/``dim``."""
    from meta import configs

    name, _, extra = args.config.partition(":")  # "cpu" or "cpu:spatial=8,spatial_kernel=1"
    config = configs.load(f"{name}:{kind}" + (f",{extra}" if extra else ""),
                          [f"latent_dim={dim}", f"lr={args.lr!r}", f"lr_decay={args.lr_decay!r}"])
    return configs.to_config(config).replace(eval_every=args.eval_every, eval_images=32,
                                             checkpoint_every=args.eval_every, **fields)


def planned_steps(args, kind: str, dim: int, budget: float) -> int:
    """Outer steps that fit in ``budget`` seconds (:func:`meta.train.plan_steps`, a
    :data:`PROBE_SECONDS` timing run of the same config)."""
    from meta import train

    probe = min(PROBE_SECONDS, max(1.0, budget / 10))  # a tenth of a short budget
    steps = train.plan_steps(train_config(args, kind, dim), budget, probe)
    print(f"{kind} D={dim}: {steps} steps planned for {budget:.0f} s from a {probe:g} s probe", flush=True)
    return steps


def checkpoint(args, kind: str, dim: int) -> str:
    """Meta-trains (or resumes, or reuses) a functa for ``kind``/``dim``; returns its folder.

    Every run gets the same wall-clock budget (``--budget-minutes`` of training, counted
    by :func:`meta.train.train`'s ``max_seconds``). With ``--lr-decay cosine`` the run is
    planned in steps from a timing probe (:func:`planned_steps`); given ``args.steps``, it
    runs that many whatever the decay. Either way the budget, with 10% slack, only caps
    it. The seconds and the plan are kept in ``budget.json`` so that an interrupted
    ladder resumes where it stopped and a finished run is reused as it is.
    """
    from asmr_jax import io as aio
    from meta import checkpoint, train

    budget = 60.0 * args.budget_minutes
    decay = "" if args.lr_decay == "none" else f"-{args.lr_decay}"
    config = args.config.replace(":", "-").replace(",", "-").replace("=", "")
    fixed = getattr(args, "steps", None)  # a step count given: no probe, the budget only caps it
    tail = "" if fixed is None else f"-{fixed}steps"
    path = os.path.join(args.workdir, f"{kind}-{config}-d{dim}-{args.budget_minutes:g}min-lr{args.lr:g}{decay}{tail}")
    ledger = os.path.join(path, BUDGET)
    used = {"seconds": 0.0, "steps": 0, "done": False}
    if os.path.isfile(ledger):
        with open(ledger) as f:
            used = json.load(f)
    if used["done"]:
        print(f"reusing {path} ({used['steps']} steps in {used['seconds'] / 60:.1f} min)")
        return path
    if args.lr_decay == "none" and fixed is None:  # a constant rate: train until the budget ends
        steps, cap = 10**7, budget
    else:
        if "planned_steps" not in used:
            used["planned_steps"] = planned_steps(args, kind, dim, budget) if fixed is None else int(fixed)
            os.makedirs(path, exist_ok=True)
            aio.write_json(ledger, used)
        steps, cap = used["planned_steps"], 1.1 * budget
    print(f"training {path}: {cap - used['seconds']:.0f} s of {cap:.0f} s left", flush=True)
    res = train.train(train_config(args, kind, dim, steps=steps, max_seconds=cap - used["seconds"]), path,
                      resume=os.path.isdir(os.path.join(path, checkpoint.CHECKPOINTS)), progress=False,
                      log=lambda *a, **k: print(*a, flush=True))
    used.update(seconds=used["seconds"] + res.metrics["budget_seconds"], steps=res.step,
                done=res.status in ("time_budget", "done"), status=res.status,
                test_psnr=res.metrics["test_psnr"], shared_params=res.metrics["shared_params"],
                step_seconds_median=res.metrics["step_seconds_median"])
    aio.write_json(ledger, used)
    print(f"trained {path}: {res.step} steps in {used['seconds'] / 60:.1f} min, test PSNR "
          f"{res.metrics['test_psnr']}", flush=True)
    return path


def ssim_each(pred, target) -> np.ndarray:
    from asmr_jax import metrics

    return np.array([metrics.ssim(np.clip(p, 0, 1), t) for p, t in zip(pred, target)], np.float64)


def time_one_by_one(net, codec, images, count: int, refine: int = 0, rate_weight: float = 0.0):
    """Seconds to encode and to decode each of ``count`` images, one image at a time, as
    ``asmr encode`` / ``asmr decode`` run them (a first, untimed call compiles): two lists."""
    from meta import compress as C

    enc_t, dec_t = [], []
    for i in range(int(count) + 1):
        t = time.perf_counter()
        enc = C.encode(images[i % len(images)], codec, net.id, net.fit, net.render, refine_steps=refine,
                       render_jax=net.render_jax, rate_weight=rate_weight)
        t1 = time.perf_counter()
        C.decode(enc.data, codec, net.id, net.render)
        t2 = time.perf_counter()
        if i:
            enc_t.append(t1 - t)
            dec_t.append(t2 - t1)
    return enc_t, dec_t


def measure(args, net, codec, test_latents, test_images, refine: int, rate_weight: float = 0.0) -> list[dict]:
    """Writes, reads back and decodes the test images as single files and as one container.

    Returns two rows (``single``, ``container``); PSNR/SSIM come from the decoded pixels.
    Also times single-image encode/decode, as ``asmr encode`` / ``asmr decode`` run them.
    """
    from meta import compress as C
    from meta import container
    from meta.refine import refine as refine_latents

    pixels = int(np.prod(net.shape))
    latents = (refine_latents(test_latents, test_images, net.render_jax, codec.quantizer, refine,
                              symbols=codec.symbols, rate_weight=rate_weight) if refine else test_latents)
    mid, cid = container.short_ids(net.id, codec.codec_id)
    sizes, payloads, decoded, decoded_z = [], [], [], []
    for z in latents:
        payload, _ = codec.encode_latent(z)
        data = container.pack(container.Stream(mid, cid, None, payload))
        image, z_back, _ = C.decode(data, codec, net.id, net.render)  # what a decoder makes of the file
        decoded.append(image)
        decoded_z.append(z_back)
        sizes.append(len(data))
        payloads.append(len(payload))
    decoded = np.stack(decoded)
    many_payload, _ = codec.encode_latent(latents)
    many = container.pack(container.Stream(mid, cid, len(latents), many_payload))
    many_decoded, many_z, _ = C.decode(many, codec, net.id, net.render)
    # one stream or many files: the same latents exactly; the same pixels up to the float
    # rounding of a render batched differently (1 image vs 64): 2.4e-5 seen at D = 32 after
    # 22k steps; 1e-4 is 1/40 of an 8-bit level
    np.testing.assert_array_equal(many_z, np.stack(decoded_z))
    np.testing.assert_allclose(many_decoded, decoded, rtol=0, atol=1e-4)
    q_psnr, q_ssim = C.psnr_each(decoded, test_images), ssim_each(decoded, test_images)
    enc_t, dec_t = time_one_by_one(net, codec, test_images, args.timing_images, refine, rate_weight)
    common = {"bits": codec.bits, "quantizer": args.quantizer, "refine": refine, "rate_weight": rate_weight,
              "images": len(test_images),
              "psnr": float(np.mean(q_psnr)),
              "ssim": float(np.mean(q_ssim)), "encode_ms": 1e3 * statistics.median(enc_t),
              "decode_ms": 1e3 * statistics.median(dec_t),
              "symbol_table": "shared" if codec.symbols.shared else "per-dim"}
    return [
        {**common, "file": "single", "bpp": 8 * float(np.mean(sizes)) / pixels,
         "payload_bpp": 8 * float(np.mean(payloads)) / pixels},
        {**common, "file": "container", "bpp": 8 * len(many) / (pixels * len(latents)),
         "payload_bpp": 8 * len(many_payload) / (pixels * len(latents))},
    ]


def image_digests(images) -> set:
    import hashlib

    return {hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images}


def functa_rows(args, kind, dim, train_images, test_images):
    """Rows per bit depth (single file and container, with and without refinement) of one checkpoint."""
    from meta import compress as C

    path = checkpoint(args, kind, dim)
    with open(os.path.join(path, BUDGET)) as f:
        budget = json.load(f)
    net = C.MetaNetwork(path)
    train_latents = net.fit(train_images)  # the codec sees train-split latents only
    t0 = time.perf_counter()
    test_latents = net.fit(test_images)
    float_psnr = C.psnr_each(net.render(test_latents), test_images)
    rows = []
    for bits in args.bits:
        codec = C.fit_codec(train_latents, bits, net.id, mode=args.quantizer)
        settings = [(0, 0.0)] + ([(args.refine, w) for w in sorted({0.0, *args.rate_weights})] if args.refine else [])
        for refine, weight in settings:
            for r in measure(args, net, codec, test_latents, test_images, refine, weight):
                r.update(codec=f"{kind}-functa", latent_dim=dim, psnr_unquantized=float(np.mean(float_psnr)),
                         network_params=int(net.meta.model.num_params()), shared_params=int(net.meta.num_params()),
                         train_steps=budget["steps"], train_minutes=budget["seconds"] / 60, checkpoint=net.path)
                rows.append(r)
                print(f"{r['codec']:>13} D={dim:<4} b={bits:<2} refine {refine:<3} rate x{weight:<6g} {r['file']:>9} "
                      f"{r['bpp']:6.3f} bpp ({r['payload_bpp']:.3f} payload) {r['psnr']:6.2f} dB SSIM "
                      f"{r['ssim']:.3f} (float {r['psnr_unquantized']:.2f})  enc {r['encode_ms']:.0f} ms dec "
                      f"{r['decode_ms']:.0f} ms  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return rows


def pillow_rows(name: str, qualities, images):
    """A classical codec of :mod:`experiments.codecs` (``"jpeg 4:4:4"``, ``"jpeg 4:2:0"``,
    ``"webp"``) at each quality on the same images, one file per image."""
    from asmr_jax.data import to_uint8
    from experiments import codecs
    from meta.compress import psnr_each

    rows = []
    pixels = images.shape[1] * images.shape[2]
    for q in qualities:
        sizes, decoded, enc_t, dec_t = [], [], [], []
        for img in images:
            t = time.perf_counter()
            data = codecs.encode(name, to_uint8(img), q)
            t1 = time.perf_counter()
            decoded.append(codecs.decode(data, images.shape[-1]))
            t2 = time.perf_counter()
            sizes.append(len(data))
            enc_t.append(t1 - t)
            dec_t.append(t2 - t1)
        decoded = np.stack(decoded)
        rows.append({"codec": name, "quality": q, "images": len(images), "file": "single",
                     "bpp": 8 * float(np.mean(sizes)) / pixels, "payload_bpp": None,
                     "min_bytes": int(min(sizes)), "psnr": float(np.mean(psnr_each(decoded, images))),
                     "ssim": float(np.mean(ssim_each(decoded, images))),
                     "encode_ms": 1e3 * statistics.median(enc_t), "decode_ms": 1e3 * statistics.median(dec_t)})
    return rows


def front(rows):
    """The rows no other row beats in both bpp and PSNR, by rising bpp (the codec's usable curve)."""
    out = []
    for r in sorted(rows, key=lambda r: (r["bpp"], -r["psnr"])):
        if not out or r["psnr"] > out[-1]["psnr"]:
            out.append(r)
    return out


def interpolate(curve, bpp):
    """PSNR of a front at ``bpp`` (linear in log bpp between its points; beyond the last, the last:
    a codec can spend fewer bits than allowed); ``None`` below its lowest rate."""
    xs, ys = [np.log(r["bpp"]) for r in curve], [r["psnr"] for r in curve]
    if not curve or np.log(bpp) < xs[0]:
        return None
    return float(np.interp(np.log(bpp), xs, ys))


def verdict(rows) -> list[str]:
    """The target of the rate-distortion check, measured: functa fronts against WebP below 1 bpp."""
    webp = [r for r in rows if r["codec"] == "webp" and r["bpp"] < 1.0]
    lines = []
    for codec in sorted({r["codec"] for r in rows if r["codec"].endswith("-functa")}):
        curve = front([r for r in rows if r["codec"] == codec])  # refine and container allowed
        gaps = [(w["bpp"], interpolate(curve, w["bpp"]), w["psnr"]) for w in webp]
        parts = [f"at {b:.3f} bpp {'below its lowest rate' if p is None else f'{p - w:+.2f} dB'} vs WebP {w:.2f} dB"
                 for b, p, w in gaps]
        low = [r for r in curve if webp and r["bpp"] < min(w["bpp"] for w in webp)]
        best_low = max(low, key=lambda r: r["psnr"]) if low else None
        lines.append(f"- {codec}: " + ("; ".join(parts) if parts else "no WebP point below 1 bpp") + ". "
                     + (f"Below WebP's lowest rate: {best_low['psnr']:.2f} dB at {best_low['bpp']:.3f} bpp "
                        f"(D={best_low['latent_dim']}, {best_low['bits']} bits, {best_low['file']})."
                        if best_low else "Nothing below WebP's lowest rate."))
    return lines


FIXED_RATES = (0.1, 0.2, 0.3, 0.5)  # bpp, besides WebP's rates below 1 bpp


def at_rates(rows) -> list[str]:
    """A table: PSNR of each codec's front at :data:`FIXED_RATES` and at WebP's rates below 1 bpp."""
    rates = sorted(set(FIXED_RATES) | {r["bpp"] for r in rows if r["codec"] == "webp" and r["bpp"] < 1})
    codecs = [c for c in ("asmr-functa", "siren-functa", "webp") if any(r["codec"] == c for r in rows)]
    lines = ["| codec | " + " | ".join(f"{b:.3g} bpp" for b in rates) + " |", "|---|" + "---:|" * len(rates)]
    for codec in codecs:
        curve = front([r for r in rows if r["codec"] == codec])
        cells = [interpolate(curve, b) for b in rates]
        lines.append(f"| {codec} | " + " | ".join("-" if p is None else f"{p:.2f}" for p in cells) + " |")
    return lines


def markdown(rows) -> str:
    from meta import container

    lines = [
        "| codec | setting | file | bpp (file) | bpp (payload) | PSNR dB | SSIM | PSNR before quant. | "
        "encode ms | decode ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        weight = f", rate weight {r['rate_weight']:g}" if r.get("rate_weight") else ""
        setting = (f"D={r['latent_dim']}, {r.get('quantizer', 'dim')} {r['bits']} bits, refine {r['refine']}{weight}"
                   if "bits" in r
                   else f"quality {r['quality']}")
        pay = "-" if r.get("payload_bpp") is None else f"{r['payload_bpp']:.3f}"
        unq = f"{r['psnr_unquantized']:.2f}" if "psnr_unquantized" in r else "-"
        lines.append(f"| {r['codec']} | {setting} | {r['file']} | {r['bpp']:.3f} | {pay} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {unq} | {r['encode_ms']:.1f} | {r['decode_ms']:.2f} |")
    lines += ["", "Target (functa front: any D, bits, refinement, single file or container):", *verdict(rows), ""]
    lines += ["PSNR dB of each front at fixed rates (file bpp, interpolated in log bpp; '-': below its lowest "
              "rate):", "", *at_rates(rows), ""]
    jpeg = [r for r in rows if r["codec"].startswith("jpeg")]
    if jpeg:
        lines.append(f"JPEG's smallest file here is {min(r['min_bytes'] for r in jpeg)} bytes "
                     f"({8 * min(r['min_bytes'] for r in jpeg) / 1024:.2f} bpp at 32x32), almost all of it "
                     "fixed header (quantization and Huffman tables).")
    lines.append(f"Functa single file = {container.SINGLE_OVERHEAD}-byte header/checksum + payload; the "
                 f"container pays {container.overhead(136)} bytes once for all its images.")
    lines.append("COIN++ on CIFAR-10 (reference, other images, payload bpp): "
                 + ", ".join(f"{p} dB at {b} bpp" for b, p in COINPP_CIFAR10) + ".")
    return "\n".join(lines) + "\n"


def plot(rows, path, title: str = "32x32 held-out test patches (coffee, chelsea)"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {"asmr-functa": ("o", "C0"), "siren-functa": ("s", "C1"), "jpeg 4:4:4": ("^", "C2"),
              "jpeg 4:2:0": ("<", "C4"), "webp": ("v", "C3")}
    for codec, (marker, color) in styles.items():
        rs = [r for r in rows if r["codec"] == codec]
        if not rs:
            continue
        if codec.endswith("-functa"):
            for dim in sorted({r["latent_dim"] for r in rs}):  # per latent size, container, refined
                pts = sorted((r for r in rs if r["latent_dim"] == dim and r["file"] == "container"
                              and r["refine"] == max(x["refine"] for x in rs)), key=lambda r: r["bpp"])
                ax.plot([r["bpp"] for r in pts], [r["psnr"] for r in pts], marker=marker, ms=3, lw=0.8,
                        color=color, alpha=0.45)
            single = front([r for r in rs if r["file"] == "single"])
            ax.plot([r["bpp"] for r in single], [r["psnr"] for r in single], ls="--", color=color, lw=1,
                    label=f"{codec}, one file per image")
            rs = front(rs)
            label = f"{codec}, container (front over D, bits)"
        else:
            rs = sorted(rs, key=lambda r: r["bpp"])
            label = codec
        ax.plot([r["bpp"] for r in rs], [r["psnr"] for r in rs], marker=marker, color=color, lw=2, label=label)
    b, p = zip(*COINPP_CIFAR10)
    ax.plot(b, p, "k*:", label="COIN++ CIFAR-10 (other images; payload bpp)")
    ax.set_xlabel("bits per pixel (file bytes, headers included)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_xscale("log")
    ticks = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_only:
        path = os.path.join(args.out, "rate_distortion.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--report-only needs {path}, written by a full run")
        with open(path) as f:
            report(json.load(f), args.out)
        return 0
    from PIL import features

    from asmr_jax.datasets import load_dataset
    from meta import container

    t_start = time.perf_counter()
    data = train_config(args, args.models[0], args.latent_dims[0])  # the ladder's images: the config's dataset
    test = load_dataset(data.dataset, "test", data.resolution)
    train = load_dataset(data.dataset, "train", data.resolution)
    test_images = test.get(np.arange(min(len(test), args.test_images)))
    idx = np.linspace(0, len(train) - 1, min(len(train), args.codec_images)).astype(int)
    train_images = train.get(idx)
    overlap = image_digests(train_images) & image_digests(test_images)
    if overlap:  # the codec (and the meta-training) must never see a test image
        raise RuntimeError(f"{len(overlap)} {data.dataset} test images also appear in the train split")
    print(
        f"{len(test_images)} {data.dataset} test images, codec fitted on {len(train_images)} train images; models "
        f"{args.models}, "
        f"D {args.latent_dims}, bits {args.bits}, {args.budget_minutes:g} min meta-training each, refine "
        f"{args.refine}"
    )

    if args.train_only:
        for kind in args.models:
            for dim in args.latent_dims:
                checkpoint(args, kind, dim)
        return 0
    rows = []
    for kind in args.models:
        for dim in args.latent_dims:
            rows += functa_rows(args, kind, dim, train_images, test_images)
    rows += pillow_rows("jpeg 4:4:4", JPEG_QUALITIES, test_images)
    rows += pillow_rows("jpeg 4:2:0", JPEG_QUALITIES, test_images)
    webp = features.check("webp")
    if webp:
        rows += pillow_rows("webp", WEBP_QUALITIES, test_images)
    seconds = time.perf_counter() - t_start

    result = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "report_only")},
        "command": " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": data.dataset,
        "resolution": data.resolution,
        "test_images": len(test_images),
        "codec_images": len(train_images),
        "webp_available": webp,
        "single_file_overhead_bytes": container.SINGLE_OVERHEAD,
        "budget_minutes": args.budget_minutes,
        "total_seconds": seconds,
        "rows": rows,
        "coinpp_cifar10_reference": [{"bpp": b, "psnr": p} for b, p in COINPP_CIFAR10],
        "machine": f"{os.cpu_count()} CPU cores (shared)",
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "rate_distortion.json"), "w") as f:
        json.dump(result, f, indent=2)
    report(result, args.out)
    return 0


def report(result: dict, out: str):
    """Writes ``rate_distortion.md`` and ``.png`` in ``out`` from a result (the saved JSON)."""
    md = markdown(result["rows"])
    print(md)
    minutes = result["total_seconds"] / 60
    with open(os.path.join(out, "rate_distortion.md"), "w") as f:
        command = f"python -m experiments.rate_distortion {result.get('command', '')}".strip()
        f.write(f"Run: `{command}` ({minutes:.1f} min; checkpoints already in --workdir are reused, not "
                f"retrained)\n\n" + md)
    dataset, side = result.get("dataset", "patches"), result.get("resolution", 32)
    titled = {} if dataset == "patches" else {"title": f"{dataset}, {side}x{side}, held-out test split"}
    plot(result["rows"], os.path.join(out, "rate_distortion.png"), **titled)
    print(f"wrote {out}/rate_distortion.json, .md, .png ({minutes:.1f} min)")


if __name__ == "__main__":
    sys.exit(main())
