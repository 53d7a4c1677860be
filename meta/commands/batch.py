"""``asmr fit-many``: fit one network per image of a dataset into a chunked store.

    asmr fit-many --dataset patches --split test --resolution 32 --model asmr --width 64 \\
        --levels 3 --steps 500 --chunk 64 --out runs/patches32 [--resume] [--limit 128]

``--dataset`` is a name for :func:`asmr_jax.datasets.load_dataset` (``patches``, ``lfw``,
a prepared TFDS set with ``--data-dir``) or a ``.npy`` file holding ``[n, H, W, C]``
images on ``[0, 1]``. The store format is described in :mod:`asmr_jax.store`.
Multi-host: run the same command with ``--distributed`` on every host. The process group
comes from the cluster environment (SLURM, Open MPI, TPU pods, ... as detected by
``jax.distributed.initialize``) or from ``--coordinator HOST:PORT --num-processes N
--process-id I``; the signal axis is then sharded over the devices of all hosts.
"""

from __future__ import annotations

import os
import time

from meta.commands.signal import add_distributed_flags, add_model_flags, model_from_args, seed_value, start_distributed


def _open_dataset(args):
    from asmr_jax import datasets, imageset

    if args.resolution is not None and args.resolution < 1:
        raise ValueError(f"--resolution must be >= 1 pixels, got {args.resolution}")
    if args.dataset.endswith(".npy"):
        import numpy as np

        if not os.path.isfile(args.dataset):
            raise FileNotFoundError(f"--dataset {args.dataset}: no such file")
        arr = np.load(args.dataset, allow_pickle=False)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise ValueError(f"--dataset {args.dataset} holds shape {arr.shape}, expected [n, H, W, C] images")
        if args.resolution is not None and tuple(arr.shape[1:3]) != (args.resolution,) * 2:
            raise ValueError(
                f"--resolution {args.resolution} does not match the {arr.shape[1]}x{arr.shape[2]} "
                f"images in {args.dataset}; drop --resolution for .npy input"
            )
        return imageset.from_array(arr, name=os.path.basename(args.dataset))
    return datasets.load_dataset(
        args.dataset, split=args.split, resolution=args.resolution or 32, data_dir=args.data_dir
    )


def cmd_fit_many(args) -> int:
    import numpy as np

    from asmr_jax import batch, macs

    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    start_distributed(args)  # before any JAX computation; every process runs this same command
    import jax

    say = print if jax.process_index() == 0 else (lambda *a, **k: None)  # only process 0 reports
    dataset = _open_dataset(args)
    model = model_from_args(args, dataset.shape, dataset.channels)
    total = len(dataset) if args.limit is None else min(len(dataset), args.limit)
    say(
        f"{model.kind}: {total} signals of {dataset.shape} x {dataset.channels}, "
        f"{model.num_params():,} params, "
        f"{macs.count(model).paper_macs:,.1f} MAC/sample, chunks of {args.chunk}"
    )
    t0 = time.perf_counter()
    store = batch.fit_dataset(
        model,
        dataset,
        args.out,
        args.chunk,
        args.steps,
        resume=args.resume,
        limit=args.limit,
        lr=args.lr,
        cosine=args.cosine,
        seed=args.seed,
        target_psnr=args.target_psnr,
        steps_per_call=args.steps_per_call,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - t0
    arrays = store.arrays()
    psnr, steps = arrays["psnr"], arrays["steps"]
    say(f"{'signals':>8} {'mean PSNR':>10} {'min PSNR':>9} {'mean steps':>11} {'seconds':>8}")
    say(
        f"{len(store):>8} {float(np.mean(psnr)):>10.2f} {float(np.min(psnr)):>9.2f} "
        f"{float(np.mean(steps)):>11.1f} {seconds:>8.1f}"
    )
    say(f"wrote {store.path} ({len(store.meta['chunks'])} chunks)")
    return 0


def add_commands(sub):
    p = sub.add_parser(
        "fit-many",
        help="fit one network per image of a dataset (vmap, sharded, chunked store)",
        description="Fit an independent ASMR/SIREN to every image of a dataset, many at once, "
        "writing a resumable chunked store.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (patches, lfw, a prepared TFDS name) or a .npy file [n, H, W, C]",
    )
    p.add_argument("--split", default="train", help="dataset split (default train)")
    p.add_argument("--resolution", type=int, default=None, help="image size (default 32; .npy: its own)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir with prepared array_record files")
    add_model_flags(p)
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=500, help="full-batch Adam steps per signal (default 500)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    g.add_argument("--cosine", action="store_true", help="cosine-decay the rate to 1e-5")
    g.add_argument("--seed", type=seed_value, default=0, help="signal i is initialized from fold_in(key(seed), i)")
    g.add_argument("--target-psnr", type=float, default=None, help="stop each signal once it reaches this PSNR")
    g.add_argument("--chunk", type=int, default=64, help="signals fitted together and stored per file (default 64)")
    g.add_argument("--steps-per-call", type=int, default=100, help="steps per jitted scan call (default 100)")
    p.add_argument("--limit", type=int, default=None, help="fit only the first N signals")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted store in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_distributed_flags(p)
    p.set_defaults(func=cmd_fit_many)
