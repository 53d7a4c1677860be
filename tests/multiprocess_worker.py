"""One process of the multi-process tests (run by tests/test_multiprocess.py, not collected).

    python tests/multiprocess_worker.py OUT NUM_PROCESSES PROCESS_ID PORT DEVICES

With NUM_PROCESSES > 1 it joins a ``jax.distributed`` group on 127.0.0.1:PORT. It runs a
short meta-training (then a resume to more steps) and a fit-many store, and process 0
writes the results to OUT/result.npz.
"""

import faulthandler
import os
import sys

# a hang prints every thread's stack, then exits
faulthandler.dump_traceback_later(int(os.environ.get("ASMR_WORKER_TIMEOUT", "150")), exit=True)

out, nproc, pid, port, ndev = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ndev}".strip()
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from asmr_jax import batch, sharding  # noqa: E402

if nproc > 1:
    sharding.initialize_distributed(f"127.0.0.1:{port}", nproc, pid, timeout_s=60)
jax.config.update("jax_default_matmul_precision", "highest")
assert jax.device_count() == 4, jax.devices()

from asmr_jax.imageset import from_array  # noqa: E402
from asmr_jax.siren import SIREN  # noqa: E402
from meta import train as train_lib  # noqa: E402


def images(n, seed):
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 8), indexing="ij")
    base = rng.uniform(0.2, 0.8, size=(n, 1, 1, 3))
    wave = 0.15 * np.sin(rng.uniform(1, 4, size=(n, 1, 1, 1)) * (x + y)[None, :, :, None] * 3)
    return np.clip(base + wave, 0, 1).astype(np.float32)


class CountingDataset:
    """An in-memory dataset that counts the images this process loaded."""

    def __init__(self, ds):
        self.ds, self.loaded = ds, 0
        self.name, self.split, self.shape, self.channels = ds.name, ds.split, ds.shape, ds.channels

    def __len__(self):
        return len(self.ds)

    def get(self, idx):
        self.loaded += len(np.atleast_1d(idx))
        return self.ds.get(idx)

    def steps_per_epoch(self, b, drop_remainder=True):
        return self.ds.steps_per_epoch(b, drop_remainder)

    def batch_indices(self, *a, **k):
        return self.ds.batch_indices(*a, **k)


train_ds = CountingDataset(from_array(images(16, 0), "toy", "train"))
test_ds = from_array(images(4, 1), "toy", "test")
kw = dict(data=train_ds, test_data=test_ds, resolution=8, model="asmr", width=8, levels=2, latent_dim=4,
          batch_size=8, eval_images=4, eval_every=3, eval_more_steps=4, checkpoint_every=3, log_every=2,
          progress=False, plots=False, log=lambda *a: None)
first = train_lib.train(workdir=os.path.join(out, "meta"), steps=3, **kw)
resumed = train_lib.train(workdir=os.path.join(out, "meta"), steps=5, resume=True, **kw)
store = batch.fit_dataset(SIREN((8, 8), 3, widths=(8,)), from_array(images(6, 2), "toy", "test"),
                          os.path.join(out, "store"), chunk=6, steps=5, lr=1e-3, progress=False)
if jax.process_index() == 0:
    arrays = {f"first/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(first.params))}
    arrays.update({f"resumed/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(resumed.params))})
    arrays.update({f"store/{k}": v for k, v in store.arrays().items()})
    for i in range(len(store)):
        arrays.update({f"store/params/{i}/{j}": x for j, x in enumerate(jax.tree.leaves(store.params(i)))})
    arrays["history_loss"] = np.asarray([h["loss"] for h in resumed.history])
    np.savez(os.path.join(out, "result.npz"), **arrays)
with open(os.path.join(out, f"loaded_{pid}.txt"), "w") as f:
    f.write(str(train_ds.loaded))
print(f"process {pid} done", flush=True)
