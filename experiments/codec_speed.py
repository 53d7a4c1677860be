"""Encode / decode time per image of meta-learned checkpoints, one image at a time.

For each checkpoint (a ``meta-train`` workdir or export, global or spatial latents): the
codec is fitted at ``--bits`` on the latents of ``--codec-images`` training images of
the checkpoint's own dataset, then ``--images`` held-out test images are encoded and
decoded one by one, as ``asmr encode`` / ``asmr decode`` run them (a first, untimed call
compiles), without refinement and with ``--refine`` straight-through steps. Medians in
milliseconds; run it alone on the machine. A second table splits the codec's own work per
latent (the rotation into and out of the quantized coordinates, and the range coder),
beside the rotation as an index-order float64 loop (the way to get batch- and
machine-independent bits without the exact product). ``--configs`` times untrained networks of a
meta-training config's architecture (the time per image does not depend on the weights:
the same inner steps, refinement steps and coder run whatever they hold), for when the
trained checkpoint is not at hand::

    python -m experiments.codec_speed --checkpoints outputs/quality/A,outputs/quality/B
    python -m experiments.codec_speed --configs cpu,spatial_cpu
    python -m experiments.codec_speed --configs cpu --quick --out /tmp/speed           # seconds

Writes ``experiments/results/codec_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

from experiments import common
from experiments.rate_distortion import time_one_by_one


def measure(path: str, bits: int, images: int, codec_images: int, refines: tuple[int, ...]) -> list[dict]:
    from asmr_jax.datasets import load_dataset
    from meta import compress as C
    from meta.checkpoint import read_meta_json

    net = C.MetaNetwork(path)
    train_record = read_meta_json(path).get("train", {})  # an export may not say: the bundled patches
    dataset, resolution = train_record.get("dataset", "patches"), train_record.get("resolution", net.shape[0])
    train = load_dataset(dataset, "train", resolution)
    test = load_dataset(dataset, "test", resolution)
    codec = C.fit_codec(net.fit(train.get(np.arange(min(codec_images, len(train))))), bits, net.id)
    test_images = test.get(np.arange(min(images, len(test))))
    spatial = net.meta.spatial
    rows = []
    for refine in refines:
        enc_t, dec_t = time_one_by_one(net, codec, test_images, len(test_images), refine)
        rows.append({"checkpoint": path, "latent": net.dim, "spatial": None if spatial is None else list(spatial),
                     "bits": bits, "refine": refine,
                     "images": len(test_images), "encode_ms": 1e3 * statistics.median(enc_t),
                     "decode_ms": 1e3 * statistics.median(dec_t)})
        print(f"{path}: D={net.dim} {_grid(spatial)} refine {refine}: "
              f"encode {rows[-1]['encode_ms']:.2f} ms, decode {rows[-1]['decode_ms']:.2f} ms", flush=True)
    rows[0]["parts_ms"] = codec_parts(codec, net.fit(test_images))
    return rows


def index_order_product(x, m) -> np.ndarray:
    """``x [K] @ m [K, M]`` in float64, added over ``K`` in index order (the reference)."""
    out = np.zeros(m.shape[1])
    for k in range(m.shape[0]):
        out += x[k] * m[k]
    return out


def codec_parts(codec, latents) -> dict:
    """Median ms per latent of the codec's steps, one latent at a time."""
    import time

    q = codec.quantizer
    symbols = [q.quantize(z) for z in latents]
    payloads = [codec.symbols.encode(s) for s in symbols]
    parts = {"quantize": lambda i: q.quantize(latents[i]), "dequantize": lambda i: q.dequantize(symbols[i]),
             "range encode": lambda i: codec.symbols.encode(symbols[i]),
             "range decode": lambda i: codec.symbols.decode(payloads[i], codec.dim)}
    if q.basis is not None:
        basis = q.basis.astype(np.float64)
        parts["quantize, index-order loop"] = lambda i: index_order_product(latents[i] - q.mean, basis)
        parts["dequantize, index-order loop"] = lambda i: index_order_product(
            q.low + (symbols[i] + 0.5) * q.step, basis.T)
    out = {}
    for name, fn in parts.items():
        times = []
        for i in range(len(latents)):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
        out[name] = 1e3 * statistics.median(times)
    return out


def get_config(arg: str | None = None) -> dict:
    """Every setting's default; ``"quick"``: 4 timed images and a codec fitted on 64 (seconds)."""
    common.check_config(arg, "quick")
    if arg == "quick":
        return {"bits": 8, "images": 4, "codec_images": 64, "refine": 10}
    return {"bits": 8, "images": 32, "codec_images": 1024, "refine": 10}


def export_untrained(spec: str, folder: str) -> str:
    """Exports the initial parameters of config ``spec``'s network to ``folder``; returns the path."""
    import jax

    from meta import checkpoint, configs

    config = configs.load(spec)
    meta = configs.load_meta(config)
    record = {"train": {"dataset": config.dataset, "resolution": config.resolution}}
    return checkpoint.export(os.path.join(folder, spec.replace(":", "_").replace(",", "_")), meta,
                             meta.init(jax.random.key(0)), record)


def _grid(spatial) -> str:
    return "global" if not spatial else "x".join(map(str, spatial))


def markdown(res: dict) -> str:
    rows = [[r["checkpoint"], r["latent"], _grid(r["spatial"]),
             r["bits"], r["refine"], r["images"], f"{r['encode_ms']:.2f}", f"{r['decode_ms']:.2f}"]
            for r in res["rows"]]
    table = common.markdown_table(["checkpoint", "D", "latent", "bits", "refine", "images", "encode ms (median)",
                                   "decode ms (median)"], rows)
    parted = [r for r in res["rows"] if "parts_ms" in r]
    names = list(dict.fromkeys(k for r in parted for k in r["parts_ms"]))
    parts = common.markdown_table(["checkpoint", "D"] + [f"{n} ms" for n in names],
                                  [[r["checkpoint"], r["latent"]] + [f"{r['parts_ms'][n]:.3f}" if n in r["parts_ms"]
                                                                     else "-" for n in names] for r in parted])
    return f"{table}\n\nThe codec's own steps per latent (median ms, one latent at a time):\n\n{parts}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default="", help="comma-separated meta-train workdirs or exports")
    p.add_argument("--configs", default="", help="comma-separated meta-training configs timed untrained "
                   "(their architecture; e.g. cpu,spatial_cpu)")
    p.add_argument("--bits", type=int, default=None, help="quantizer resolution (default 8)")
    p.add_argument("--images", type=int, default=None, help="test images timed one by one (default 32)")
    p.add_argument("--codec-images", type=int, default=None, help="training images the codec is fitted on "
                   "(default 1024)")
    p.add_argument("--refine", type=int, default=None, help="refinement steps of the second measurement "
                   "(default 10; 0: none)")
    p.add_argument("--quick", action="store_true", help="4 timed images, a codec fitted on 64 (seconds)")
    p.add_argument("--out", default=common.RESULTS_DIR, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    for key, value in get_config("quick" if args.quick else None).items():  # flags not given
        if getattr(args, key) is None:
            setattr(args, key, value)
    images = common.positive_int(args.images, "--images")
    codec_images = common.positive_int(args.codec_images, "--codec-images")
    if args.refine < 0:
        raise ValueError(f"--refine must be >= 0, got {args.refine}")
    refines = (0, args.refine) if args.refine else (0,)
    paths, specs = list(filter(None, args.checkpoints.split(","))), list(filter(None, args.configs.split(",")))
    if not paths and not specs:
        raise ValueError("nothing to time: give --checkpoints and/or --configs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(path, None) for path in paths] + [(export_untrained(spec, tmp), spec) for spec in specs]
        for path, spec in runs:
            rows += [{**row, "checkpoint": row["checkpoint"] if spec is None else f"{spec} (untrained)"}
                     for row in measure(path, args.bits, images, codec_images, refines)]
    common.report(args.out, "codec_speed", {"command": common.command_line("experiments.codec_speed", argv),
                                             "rows": rows}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
