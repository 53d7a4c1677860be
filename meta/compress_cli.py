"""``asmr codec-fit``, ``asmr encode``, ``asmr decode``: image files <-> compressed latent files.

The codec (quantizer + symbol tables, :mod:`meta.compress`) for ``b`` bits lives in
``CHECKPOINT/codec/bits{b}.npz``, written once by ``asmr codec-fit`` from a training
functaset (``asmr meta-encode``) or by fitting latents of a training split directly::

    asmr codec-fit CKPT --bits 6 --functaset train.npz      # or --dataset patches
    asmr encode photo.png --model CKPT --bits 6 --out photo.afz
    asmr decode photo.afz --model CKPT --out photo_decoded.png
"""

from __future__ import annotations

import os
import time

import numpy as np


def _load_image(source, net):
    from asmr_jax import data
    from meta import compress as C

    signal = data.load_signal(source)
    if signal.kind != "image":
        raise ValueError(f"{source} is a {signal.kind}, expected an image")
    image = signal.data
    if image.shape[-1] == 1 and net.channels == 3:
        image = np.repeat(image, 3, axis=-1)
    return C.check_image(image, net.shape, net.channels)


def _training_latents(args, net):
    if args.functaset:
        from meta.functaset import check_network, load_functaset

        path = args.functaset
        if not os.path.isfile(path):
            raise FileNotFoundError(f"functaset {path} does not exist")
        data = load_functaset(path)
        check_network(data, net.meta, net.params, path, args.checkpoint)
        latents = np.asarray(data["latents"], np.float32)
        return latents, f"functaset {path}"
    from asmr_jax.datasets import load_dataset

    ds = load_dataset(args.dataset, args.split, net.shape[0], data_dir=args.data_dir)
    if tuple(ds.shape) != net.shape or ds.channels != net.channels:
        raise ValueError(f"{ds!r} images are {ds.shape}x{ds.channels}, the network takes "
                         f"{net.shape}x{net.channels}")
    n = len(ds) if args.limit is None else min(len(ds), args.limit)
    latents, _ = net.fit_many(ds.get(np.arange(n)))
    return latents, f"{n} {args.dataset}/{args.split} images ({net.steps} inner steps)"


def cmd_codec_fit(args) -> int:
    from meta import compress as C

    if args.functaset is None and args.dataset is None:
        raise ValueError("give the training latents: --functaset TRAIN.npz or --dataset NAME")
    bits_list = [C.check_bits(b) for b in args.bits]
    if args.out and len(bits_list) > 1:
        raise ValueError("--out takes one --bits value; omit --out to write CKPT/codec/bits{b}.npz for each")
    net = C.MetaNetwork(args.checkpoint, steps=args.steps)
    outs = [args.out or C.codec_path(args.checkpoint, b) for b in bits_list]
    for out in outs:
        if os.path.exists(out) and not args.overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    latents, what = _training_latents(args, net)
    symbols = {"auto": None, "per-dim": True, "shared": False}[args.symbols]
    print(f"fitting codecs on {len(latents)} latents (D={net.dim}) from {what}")
    print(f"{'bits':>4} {'table':>10} {'bits/dim':>9} {'codec id':>9}  path")
    for bits, out in zip(bits_list, outs):
        codec = C.fit_codec(latents, bits, net.id, clip=args.clip, per_dim_scale=not args.global_scale,
                            per_dim_symbols=symbols)
        rate = codec.symbols.bits(codec.quantizer.quantize(latents)).mean()
        codec.save(out, overwrite=args.overwrite)
        table = "shared" if codec.symbols.shared else "per-dim"
        print(f"{bits:>4} {table:>10} {rate:>9.3f} {codec.codec_id.hex():>9}  {out}")
    return 0


def cmd_encode(args) -> int:
    from asmr_jax import io, metrics
    from meta import compress as C

    bits = C.check_bits(args.bits)
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    net = C.MetaNetwork(args.model, steps=args.steps)
    codec = C.load_codec_for(net, bits, args.codec)
    image = _load_image(args.image, net)
    t0 = time.perf_counter()
    enc = C.encode(image, codec, net.id, net.fit, net.render, refine_steps=args.refine,
                   render_jax=net.render_jax)
    seconds = time.perf_counter() - t0
    io.atomic_write(args.out, enc.data, overwrite=args.overwrite)
    ssim = metrics.ssim(enc.image, image)
    print(f"{args.image} -> {args.out}: {len(enc.data)} bytes ({enc.bpp:.3f} bpp; payload "
          f"{enc.payload_bpp:.3f} bpp), "
          f"PSNR {enc.psnr:.2f} dB (unquantized {enc.psnr_unquantized:.2f} dB)"
          + (f", SSIM {ssim:.4f}" if ssim is not None else "") + f", {seconds:.2f} s")
    return 0


def cmd_decode(args) -> int:
    from PIL import Image

    from asmr_jax import io
    from meta import compress as C

    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"decoded images are written as PNG; got --out {args.out}")
    if not os.path.isfile(args.file):
        raise FileNotFoundError(f"{args.file} does not exist")
    with open(args.file, "rb") as f:
        data = f.read()
    header = C.unpack(data, args.file)  # checks the file before the network is loaded
    net = C.MetaNetwork(args.model)
    if header.model_id != net.id:
        raise ValueError(f"{args.file} was encoded with network {header.model_id.hex()}, but {args.model} is "
                         f"{net.id.hex()}; decode it with the checkpoint it was encoded with")
    codec = C.load_codec_for(net, header.bits, args.codec)
    t0 = time.perf_counter()
    image, _, _ = C.decode(data, codec, net.id, net.render, name=args.file)
    seconds = time.perf_counter() - t0
    pixels = io.to_uint8(image)
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    io.atomic_write(args.out, lambda f: Image.fromarray(pixels).save(f, format="PNG"), overwrite=args.overwrite)
    msg = f"{args.file} -> {args.out}: {'x'.join(map(str, image.shape))}, {header.bits} bits, {seconds:.2f} s"
    if args.reference:
        from asmr_jax import metrics

        ref = _load_image(args.reference, net)
        msg += f", PSNR {metrics.psnr(image, ref):.2f} dB against {args.reference}"
    print(msg)
    return 0


def add_commands(sub):
    p = sub.add_parser("codec-fit",
                       help="fit the latent quantizer + entropy model of a meta-learned checkpoint",
                       description="Fit the b-bit quantizer and symbol tables on training latents and store "
                                   "them in CKPT/codec/bits{b}.npz, where encode/decode find them.")
    p.add_argument("checkpoint", help="meta-learning checkpoint (training workdir or exported folder)")
    p.add_argument("--bits", type=int, nargs="+", required=True,
                   help="bits per latent dimension, 1..16 (several ok)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--functaset", default=None,
                     help="training functaset .npz (asmr meta-encode) with 'latents'")
    src.add_argument("--dataset", default=None,
                     help="or fit latents of this dataset's split here (patches, lfw, ...)")
    p.add_argument("--split", default="train", help="split for --dataset (default train)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir for --dataset")
    p.add_argument("--limit", type=int, default=None, help="use at most this many --dataset images")
    p.add_argument("--steps", type=int, default=None,
                   help="inner steps for --dataset latents (default: the k trained)")
    p.add_argument("--clip", type=float, default=3.0,
                   help="quantizer range: +-clip standard deviations (default 3)")
    p.add_argument("--global-scale", action="store_true", help="one mean/std for all dims instead of per dim")
    p.add_argument("--symbols", choices=("auto", "per-dim", "shared"), default="auto",
                   help="symbol tables: per latent dim, one shared, or chosen by held-out code length "
                        "(default)")
    p.add_argument("--out", default=None, help="codec file (default CKPT/codec/bits{b}.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing codec file")
    p.set_defaults(func=cmd_codec_fit)

    p = sub.add_parser("encode", help="compress an image to a latent file (needs `asmr codec-fit` first)",
                       description="Fit the image's latent, quantize and entropy-code it, write the file.")
    p.add_argument("image", help="image file (PNG, JPEG, .npy) or a bundled image name, of the model's size")
    p.add_argument("--model", required=True, help="meta-learning checkpoint")
    p.add_argument("--bits", type=int, required=True,
                   help="bits per latent dimension (a codec for it must exist)")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--codec", default=None, help="codec file (default MODEL/codec/bits{b}.npz)")
    p.add_argument("--steps", type=int, default=None,
                   help="inner steps to fit the latent (default: the k trained)")
    p.add_argument("--refine", type=int, default=0,
                   help="quantization-aware refinement steps (straight-through estimator; default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decompress a latent file to PNG",
                       description="Check and decode a file written by `asmr encode` with the same "
                                   "checkpoint.")
    p.add_argument("file", help="compressed file")
    p.add_argument("--model", required=True, help="the meta-learning checkpoint it was encoded with")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--codec", default=None,
                   help="codec file (default MODEL/codec/bits{b}.npz, b from the file)")
    p.add_argument("--reference", default=None, help="original image: also print the PSNR against it")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.set_defaults(func=cmd_decode)
