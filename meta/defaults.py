"""Default settings shared by ``asmr meta-train``, ``python -m meta.main`` and the benchmark.

``inner_lr`` is the base inner-loop rate on the per-pixel MSE (times the meta-SGD rates,
clipped to [0, 1]). Functa's 1e-2 relies on a 500k-step outer schedule: at 1e-2 we
measured no visible inner-loop progress after 150 outer steps here (the SIREN output
weights start at ~sqrt(6/K)/w0, so the latent gradient is tiny), while 300 reaches a
clearly learned model within a few hundred steps (experiments/notes/meta.md).
"""

TRAIN = {
    "dataset": "patches",
    "resolution": 32,
    "model": "asmr",
    "width": 128,
    "levels": 4,
    "latent_dim": 64,
    "inner_steps": 3,
    "inner_lr": 300.0,
    "batch_size": 16,
    "steps": 500,
    "lr": 3e-4,
    "eval_every": 100,
    "checkpoint_every": 100,
}
