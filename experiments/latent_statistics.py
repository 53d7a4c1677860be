"""Statistics of a meta-learned network's latents that decide how to quantize them.

For each checkpoint, on latents of ``--images`` train patches (the codec's training
data, never the test patches):

- the spread (max / min) of the latent dimensions' stds;
- the decoder's sensitivity to each coordinate, ``mean over images of ||d render / d y_i||^2``
  per pixel, for the latent dimensions and for the principal components (``asmr
  codec-fit``'s default rotation), and its spread;
- the coding gain of the rotation at high rate, ``0.5 * log2(geomean(var_dim) /
  geomean(eigenvalues))`` bits per dimension;
- what weighting the cell widths by the sensitivity could add to one width for all
  principal components, at high rate: ``10 * log10(mean(w) / geomean(w))`` dB.

Writes ``experiments/results/latent_statistics.{json,md}``::

    python -m experiments.latent_statistics outputs/compress/rd/asmr-cpu-d256-25min-lr0.0003-cosine
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from experiments.common import RESULTS_DIR, check_config, command_line


def get_config(arg: str | None = None) -> dict:
    """The defaults: latents of 1024 train patches (what the rate-distortion codec is fitted on)."""
    check_config(arg)
    return {"images": 1024}


def sensitivity(render_jax, latents, axes, batch: int = 32) -> np.ndarray:
    """``[D]`` mean over ``latents`` ``[n, D]`` of the squared derivative of the rendered pixels
    (mean over pixels) along each column of ``axes`` ``[D, D]``."""
    import jax
    import jax.numpy as jnp

    axes = jnp.asarray(axes, jnp.float32)

    def along(z):  # [D, P]: derivative of the flattened render along each axis
        flat = lambda t: render_jax((z + t @ axes.T)[None])[0].reshape(-1)  # noqa: E731
        return jax.jacfwd(flat)(jnp.zeros(axes.shape[1])).T

    jac = jax.jit(jax.vmap(along))
    total = np.zeros(axes.shape[1])
    for s in range(0, len(latents), batch):
        j = np.asarray(jac(jnp.asarray(latents[s:s + batch])), np.float64)  # [b, D, P]
        total += (j**2).mean(-1).sum(0)
    return total / len(latents)


def geomean(x) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(x, np.float64)))))


def statistics(path: str, images) -> dict:
    from meta import compress as C
    from meta import quantize

    net = C.MetaNetwork(path)
    latents = net.fit(images)
    mean, basis = quantize.principal_axes(latents)
    var_dim = latents.var(0)
    var_pc = ((latents - mean) @ basis).var(0)
    w_dim = sensitivity(net.render_jax, latents, np.eye(net.dim))
    w_pc = sensitivity(net.render_jax, latents, basis)
    return {
        "checkpoint": path, "latent_dim": net.dim, "images": len(images),
        "std_spread": float(np.sqrt(var_dim.max() / var_dim.min())),
        "sensitivity_spread_dim": float(w_dim.max() / w_dim.min()),
        "sensitivity_spread_pc": float(w_pc.max() / w_pc.min()),
        "variance_ratio": geomean(var_dim) / geomean(var_pc),
        "rotation_gain_bits_per_dim": 0.5 * float(np.log2(geomean(var_dim) / geomean(var_pc))),
        "weighting_gain_db": 10 * float(np.log10(w_pc.mean() / geomean(w_pc))),
        # the total is the trace of the mean Jacobian Gram matrix: the same in any orthonormal basis
        "sensitivity_total_dim": float(w_dim.sum()), "sensitivity_total_pc": float(w_pc.sum()),
    }


def markdown(rows) -> str:
    lines = ["| checkpoint | D | std spread (dims) | sensitivity spread (dims / PCs) | geomean var dims / PCs | "
             "rotation gain (bits/dim) | weighting gain (dB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {os.path.basename(r['checkpoint'])} | {r['latent_dim']} | {r['std_spread']:.1f}x | "
                     f"{r['sensitivity_spread_dim']:.1f}x / {r['sensitivity_spread_pc']:.1f}x | "
                     f"{r['variance_ratio']:.1f}x | {r['rotation_gain_bits_per_dim']:.2f} | "
                     f"{r['weighting_gain_db']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="meta-learned checkpoints (training workdirs)")
    p.add_argument("--images", type=int, default=get_config()["images"],
                   help="train patches (default 1024, as the codec)")
    p.add_argument("--out", default=RESULTS_DIR, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    from asmr_jax.datasets import load_dataset

    train = load_dataset("patches", "train", 32)
    images = train.get(np.linspace(0, len(train) - 1, min(len(train), args.images)).astype(int))
    rows = [statistics(path, images) for path in args.checkpoints]
    md = markdown(rows)
    print(md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latent_statistics.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(args.out, "latent_statistics.md"), "w") as f:
        f.write(f"Run: `{command_line('experiments.latent_statistics', argv)}`\n\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
