"""``asmr codec-fit``, ``asmr encode``, ``asmr decode``: image files <-> compressed latent files.

The codec (quantizer on the latents' principal components + symbol tables,
:mod:`meta.compress`) for ``b`` bits lives in
``CHECKPOINT/codec/bits{b}.npz``, written once by ``asmr codec-fit`` from a training
functaset (``asmr meta-encode``) or by fitting latents of a training split directly::

    asmr codec-fit CKPT --bits 8 --functaset train.npz      # or --dataset patches
    asmr encode photo.png --model CKPT --bits 8 --out photo.afz
    asmr decode photo.afz --model CKPT --out photo_decoded.png
    asmr encode photos/ --model CKPT --bits 8 --out photos.afzm     # one container, shared header
    asmr decode photos.afzm --model CKPT --out decoded/
"""

from __future__ import annotations

import os
import time


def _load_image(source, net):
    import numpy as np

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
    import numpy as np

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
    latents = net.fit(ds.get(np.arange(n)))
    return latents, f"{n} {args.dataset}/{args.split} images ({net.steps} inner steps)"


def cmd_codec_fit(args) -> int:
    from meta import compress as C
    from meta import quantize

    if args.quantizer not in quantize.QUANTIZER_MODES:
        raise ValueError(f"--quantizer must be one of {', '.join(quantize.QUANTIZER_MODES)}, got {args.quantizer!r}")
    if args.functaset is None and args.dataset is None:
        raise ValueError("give the training latents: --functaset TRAIN.npz or --dataset NAME")
    bits_list = [quantize.check_bits(b) for b in args.bits]
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
        codec = C.fit_codec(latents, bits, net.id, clip=args.clip, mode=args.quantizer, per_dim_symbols=symbols)
        rate = codec.symbols.bits(codec.quantizer.quantize(latents)).mean()
        codec.save(out, overwrite=args.overwrite)
        table = "shared" if codec.symbols.shared else "per-dim"
        print(f"{bits:>4} {table:>10} {rate:>9.3f} {codec.codec_id.hex():>9}  {out}")
    return 0


def _sources(paths) -> list[str]:
    """The images named by ``paths``: files, bundled names, or every image of a folder (sorted by name)."""
    from asmr_jax.data import IMAGE_EXT

    out = []
    for p in paths:
        if os.path.isdir(p):
            files = sorted(f for f in os.listdir(p) if f.lower().endswith(IMAGE_EXT + (".npy",)))
            if not files:
                raise ValueError(f"folder {p} holds no images ({', '.join(IMAGE_EXT)}, .npy)")
            out += [os.path.join(p, f) for f in files]
        else:
            out.append(p)
    return out


def _refuse_existing(paths, overwrite: bool):
    for path in paths:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")


def _summary(enc, images, seconds: float) -> str:
    import numpy as np

    from asmr_jax import metrics

    ssim = [metrics.ssim(r, x) for r, x in zip(enc.images, images)]
    return (f"{len(enc.data)} bytes ({enc.bpp:.3f} bpp; payload {enc.payload_bpp:.3f} bpp), "
            f"PSNR {np.mean(enc.psnr):.2f} dB (unquantized {np.mean(enc.psnr_unquantized):.2f} dB)"
            + (f", SSIM {np.mean(ssim):.4f}" if None not in ssim else "") + f", {seconds:.2f} s")


def cmd_encode(args) -> int:
    import numpy as np

    from asmr_jax import io
    from meta import compress as C
    from meta import quantize

    bits = quantize.check_bits(args.bits)
    if args.rate_weight and not args.refine:
        raise ValueError(f"--rate-weight {args.rate_weight:g} acts through the refinement: give --refine N too")
    sources = _sources(args.images)
    many = len(sources) > 1 or os.path.isdir(args.images[0])
    if many and args.per_image:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise NotADirectoryError(f"--per-image writes one file per image into a folder; {args.out} is a file")
        outs = [os.path.join(args.out, os.path.splitext(os.path.basename(s))[0] + ".afz") for s in sources]
        if len(set(outs)) != len(outs):
            raise ValueError("--per-image: two inputs have the same file name stem; encode them separately")
    else:
        outs = [args.out]
    _refuse_existing(outs, args.overwrite)
    net = C.MetaNetwork(args.model, steps=args.steps)
    codec = C.load_codec_for(net, bits, args.codec)
    images = np.stack([_load_image(s, net) for s in sources])
    t0 = time.perf_counter()
    kwargs = dict(refine_steps=args.refine, render_jax=net.render_jax, rate_weight=args.rate_weight)
    if many and not args.per_image:
        enc = C.encode(images, codec, net.id, net.fit, net.render, many=True, **kwargs)
        io.atomic_write(args.out, enc.data, overwrite=args.overwrite)
        print(f"{len(sources)} images -> {args.out} (in this order: {', '.join(sources[:3])}"
              f"{', ...' if len(sources) > 3 else ''}): {_summary(enc, images, time.perf_counter() - t0)}")
        return 0
    if many:
        os.makedirs(args.out, exist_ok=True)
    for src, image, out in zip(sources, images, outs):
        t = time.perf_counter()
        enc = C.encode(image, codec, net.id, net.fit, net.render, **kwargs)
        io.atomic_write(out, enc.data, overwrite=args.overwrite)
        print(f"{src} -> {out}: {_summary(enc, image[None], time.perf_counter() - t)}")
    return 0


def cmd_decode(args) -> int:
    import numpy as np

    from asmr_jax.data import write_png
    from meta import compress as C
    from meta import container

    if not os.path.isfile(args.file):
        raise FileNotFoundError(f"{args.file} does not exist")
    with open(args.file, "rb") as f:
        blob = f.read()
    stream = container.unpack(blob, args.file)  # checks the file before the network is loaded
    many = stream.count is not None
    if many:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise NotADirectoryError(f"{args.file} holds {stream.count} images: --out must be a folder, "
                                     f"{args.out} is a file")
        outs = [os.path.join(args.out, f"{i:05d}.png") for i in range(stream.count)]
    else:
        if not args.out.lower().endswith(".png"):
            raise ValueError(f"decoded images are written as PNG; got --out {args.out}")
        outs = [args.out]
    _refuse_existing(outs, args.overwrite)
    net = C.MetaNetwork(args.model)
    codec = C.Codec.load(args.codec) if args.codec else C.find_codec(net, stream, args.file)
    t0 = time.perf_counter()
    images, _, _ = C.decode(blob, codec, net.id, net.render, name=args.file)
    seconds = time.perf_counter() - t0
    images = images if many else images[None]
    if many:
        os.makedirs(args.out, exist_ok=True)
    for out, image in zip(outs, images):
        write_png(out, image, overwrite=args.overwrite)
    where = f"{args.out}/00000.png .. {os.path.basename(outs[-1])}" if many else args.out
    msg = (f"{args.file} -> {where}: {len(images)} x {'x'.join(map(str, images.shape[1:]))}, "
           f"{codec.bits} bits, {seconds:.2f} s")
    if args.reference:
        from meta.compress import psnr_each

        refs = np.stack([_load_image(s, net) for s in _sources([args.reference])])
        if len(refs) != len(images):
            raise ValueError(f"--reference {args.reference} has {len(refs)} images, the file {len(images)}")
        msg += f", PSNR {np.mean(psnr_each(images, refs)):.2f} dB against {args.reference}"
    print(msg)
    return 0


def add_commands(sub):
    p = sub.add_parser("codec-fit",
                       help="fit the latent quantizer + entropy model of a meta-learned checkpoint",
                       description="Fit the b-bit quantizer and symbol tables on training latents and store "
                                   "them in CKPT/codec/bits{b}.npz, where encode/decode find them.")
    p.add_argument("checkpoint", help="meta-learning checkpoint (training workdir or exported folder)")
    p.add_argument("--bits", type=int, nargs="+", required=True,
                   help="quantizer resolution, 1..16 (several ok): 2**b cells over +-clip std of the widest "
                        "principal component (--quantizer pca), or of each latent dimension (dim, global)")
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
    p.add_argument("--quantizer", default="pca", metavar="{pca,dim,global}",
                   help="what is quantized: the principal components of the training latents, one cell "
                        "width for all (pca, default), or each latent dimension with its own mean/std (dim) "
                        "or one shared mean/std (global)")
    p.add_argument("--symbols", choices=("auto", "per-dim", "shared"), default="auto",
                   help="symbol tables: per latent dim, one shared, or chosen by held-out code length "
                        "(default)")
    p.add_argument("--out", default=None, help="codec file (default CKPT/codec/bits{b}.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing codec file")
    p.set_defaults(func=cmd_codec_fit)

    p = sub.add_parser("encode", help="compress images to latent files (needs `asmr codec-fit` first)",
                       description="Fit each image's latent, quantize and entropy-code it, write the file. One "
                                   "image gives a single-image file (.afz); several images or a folder give one "
                                   "container (.afzm) with one shared header and one coded stream, or with "
                                   "--per-image one .afz per image in the --out folder.")
    p.add_argument("images", nargs="+",
                   help="image files (PNG, JPEG, .npy), bundled image names or folders of images (taken in "
                        "sorted name order), all of the model's size")
    p.add_argument("--model", required=True, help="meta-learning checkpoint")
    p.add_argument("--bits", type=int, required=True,
                   help="the codec's quantizer resolution (asmr codec-fit --bits; that codec must exist)")
    p.add_argument("--out", required=True, help="output file (or folder with --per-image)")
    p.add_argument("--per-image", action="store_true",
                   help="several images: one .afz file each in the --out folder instead of one container")
    p.add_argument("--codec", default=None, help="codec file (default MODEL/codec/bits{b}.npz)")
    p.add_argument("--steps", type=int, default=None,
                   help="inner steps to fit the latent (default: the k trained)")
    p.add_argument("--refine", type=int, default=0,
                   help="quantization-aware refinement steps (straight-through estimator; default 0)")
    p.add_argument("--rate-weight", type=float, default=0.0,
                   help="with --refine: minimize MSE + this x bits per pixel (0: distortion only); larger "
                        "values trade quality for smaller files")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decompress a latent file (or container) to PNG",
                       description="Check and decode a file written by `asmr encode` with the same "
                                   "checkpoint. A container decodes to OUT/00000.png, 00001.png, ... in the "
                                   "order the images were encoded.")
    p.add_argument("file", help="compressed file (.afz) or container (.afzm)")
    p.add_argument("--model", required=True, help="the meta-learning checkpoint it was encoded with")
    p.add_argument("--out", required=True, help="output PNG (a folder for a container)")
    p.add_argument("--codec", default=None,
                   help="codec file (default: the one in MODEL/codec/ whose id the file names)")
    p.add_argument("--reference", default=None,
                   help="original image (or folder, for a container): also print the PSNR against it")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.set_defaults(func=cmd_decode)
