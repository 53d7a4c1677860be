"""Functa-style meta-learning (Dupont et al., 2022) over ASMR or SIREN (SPEC section 4).

Each image ``x`` gets a latent ``phi`` of ``D`` values; a shared linear map turns it
into one shift vector per hidden layer of the network, and ``k`` SGD steps from
``phi = 0`` fit it (the inner loop)::

    shifts(phi) = split((phi @ W + b) / w0)                  [D] -> [sum(shift_widths)]
    phi_{j+1}   = phi_j - inner_lr * clip(alpha, 0, 1) * grad_phi MSE(render(theta, shifts(phi_j)), x)

``theta`` (every network weight, the modulators, ``W``, ``b``) and the meta-SGD rates
``alpha [D]`` are shared and meta-learned with Adam on the MSE after the ``k`` steps,
differentiated through them (second order). The division by ``w0`` makes ``W phi``
the shift of the sine's argument ``w0 (z W_i + b_i + s_i)``, as in functa, where the
shift is added after the ``w0`` scaling; ``W ~ N(0, 1/D)`` (functa's default dense
init), ``b = 0``, so the network starts as its own init for every image; ``alpha ~
U(0.005, 0.1)``, clipped to ``[0, 1]`` wherever it is used and after every update.

``inner_lr`` defaults to 300, not functa's 1e-2: with SIREN-initialised output weights
(``~sqrt(6/K)/w0``) the latent gradient of the per-pixel MSE is ~1e-5 at init, and at
1e-2 the inner loop changed the test PSNR by < 0.01 dB after 150 outer steps here;
functa compensates with a 500k-step outer schedule, a CPU budget cannot (see
``experiments/notes/meta.md`` for the measurements). Pass ``inner_lr=1e-2`` for
functa's exact setting.

Everything is a pure function of explicit pytrees; the network is seen only through
``model.render(params, shifts)``. Shared parameters are a dict::

    {"model": model.init(key), "latent_to_shift": {"w": [D, S], "b": [S]}, "meta_sgd_lr": [D]}

The API used downstream (compression, functasets):

* :func:`load_meta_checkpoint` ``(path) -> (meta, params)``.
* :func:`fit_latents` ``(meta, params, images [n, H, W, C], steps) -> (latents [n, D], psnrs [n])``.
* :func:`render_latents` ``(meta, params, latents [n, D]) -> images [n, H, W, C]`` on ``[0, 1]``.

>>> from asmr_jax.asmr import ASMR
>>> meta = MetaModel(ASMR((32, 32), 3, levels=3, widths=32), latent_dim=16)
>>> params = meta.init(jax.random.key(0))
>>> images = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
>>> latents, psnrs = fit_latents(meta, params, images)
>>> latents.shape, render_latents(meta, params, latents).shape
((4, 16), (4, 32, 32, 3))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from asmr_jax import io, models, sharding
from asmr_jax.datasets import check_images

FORMAT = "asmr-jax-meta"
VERSION = 1
META_JSON = "meta.json"
CHECKPOINTS = "checkpoints"
META_SGD_INIT = (0.005, 0.1)


@dataclasses.dataclass(frozen=True)
class MetaModel:
    """A network plus the functa latent machinery (static facts only; hashable).

    Args:
      model: an ASMR or SIREN (anything with ``render(params, shifts)``,
        ``shift_widths``, ``init``, ``config``, ``w0``).
      latent_dim: ``D``, values per image.
      inner_steps: ``k``, SGD steps of the inner loop (functa: 3).
      inner_lr: base inner learning rate, scaled per latent dim by the meta-SGD rates.
    """

    model: object
    latent_dim: int
    inner_steps: int = 3
    inner_lr: float = 300.0

    def __post_init__(self):
        if int(self.latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if int(self.inner_steps) < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if not (self.inner_lr > 0 and math.isfinite(self.inner_lr)):
            raise ValueError(f"inner_lr must be a positive number, got {self.inner_lr}")
        if getattr(self.model, "ndim", None) != 2:
            raise ValueError(f"meta-learning here is on images: the model must be 2-D, got shape "
                             f"{getattr(self.model, 'shape', None)}")
        object.__setattr__(self, "latent_dim", int(self.latent_dim))
        object.__setattr__(self, "inner_steps", int(self.inner_steps))
        object.__setattr__(self, "inner_lr", float(self.inner_lr))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.model.shape)

    @property
    def channels(self) -> int:
        return int(self.model.channels)

    @property
    def shift_dim(self) -> int:
        return int(sum(self.model.shift_widths))

    def init(self, key) -> dict:
        """Shared parameters (see the module docstring)."""
        k_model, k_map, k_lr = jax.random.split(key, 3)
        d, s = self.latent_dim, self.shift_dim
        return {
            "model": self.model.init(k_model),
            "latent_to_shift": {
                "w": jax.random.normal(k_map, (d, s), jnp.float32) / math.sqrt(d),
                "b": jnp.zeros((s,), jnp.float32),
            },
            "meta_sgd_lr": jax.random.uniform(k_lr, (d,), jnp.float32, *META_SGD_INIT),
        }

    def num_params(self) -> int:
        """Shared scalars: network + latent map + meta-SGD rates."""
        d, s = self.latent_dim, self.shift_dim
        return int(self.model.num_params()) + d * s + s + d

    def config(self) -> dict:
        return {"model": self.model.config(), "latent_dim": self.latent_dim,
                "inner_steps": self.inner_steps, "inner_lr": self.inner_lr}

    @classmethod
    def from_config(cls, config: dict) -> MetaModel:
        config = dict(config)
        if not isinstance(config.get("model"), dict):
            raise ValueError(f"meta config needs a 'model' dict, got keys {sorted(config)}")
        return cls(models.from_config(config.pop("model")), **config)


# ----------------------------------------------------------------------------- pure functions
def latent_to_shifts(meta: MetaModel, params, latent) -> list:
    """Latent ``[D]`` -> one shift ``[width_i]`` per hidden layer."""
    m = params["latent_to_shift"]
    flat = (latent @ m["w"] + m["b"]) / meta.model.w0  # [S]
    cuts = np.cumsum(meta.model.shift_widths)[:-1]
    return jnp.split(flat, cuts)


def render(meta: MetaModel, params, latent):
    """Image ``[H, W, C]`` (unclipped) of one latent ``[D]``."""
    return meta.model.render(params["model"], latent_to_shifts(meta, params, latent))


def image_mse(meta: MetaModel, params, latent, image):
    """MSE of one latent's render against ``image [H, W, C]``."""
    return jnp.mean((render(meta, params, latent) - image) ** 2)


def clipped_lr(params):
    """Meta-SGD rates clipped to ``[0, 1]``, shape ``[D]``."""
    return jnp.clip(params["meta_sgd_lr"], 0.0, 1.0)


def inner_loop(meta: MetaModel, params, image, steps: int | None = None, latent=None):
    """``steps`` (default ``meta.inner_steps``) meta-SGD steps on one latent, from 0.

    Args:
      image: ``[H, W, C]``.
      latent: optional start ``[D]`` (default zeros).

    Returns:
      the fitted latent ``[D]``; differentiable w.r.t. ``params`` (second order).
    """
    steps = meta.inner_steps if steps is None else int(steps)
    latent = jnp.zeros((meta.latent_dim,), jnp.float32) if latent is None else latent
    lr = meta.inner_lr * clipped_lr(params)  # [D]
    grad = jax.grad(image_mse, argnums=2)

    def body(phi, _):
        return phi - lr * grad(meta, params, phi, image), None

    latent, _ = jax.lax.scan(body, latent, None, length=steps, unroll=True)
    return latent


def outer_loss(meta: MetaModel, params, images):
    """Mean MSE after the inner loop over a batch ``[B, H, W, C]``; aux: per-image MSE ``[B]``."""

    def one(image):
        phi = inner_loop(meta, params, image)
        return image_mse(meta, params, phi, image)

    mse = jax.vmap(one)(images)  # [B]
    return jnp.mean(mse), mse


OUTER_CLIP = 1.0


def make_optimizer(lr: float = 3e-6, clip: float | None = OUTER_CLIP) -> optax.GradientTransformation:
    """Adam on every shared parameter (functa: lr 3e-6 for its width-512 depth-15 SIREN).

    The outer gradient is first clipped to global norm ``clip`` (``None``: no clipping).
    At the main job's 100x larger rate, an unclipped ASMR run at 32x32 diverged after about
    2,400 steps (test PSNR 23.9 -> 8 dB); clipping keeps the rare second-order spikes of
    the inner loop from throwing the shared weights out of the basin.
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"outer learning rate must be positive, got {lr}")
    if clip is None:
        return optax.adam(lr)
    if not (clip > 0 and math.isfinite(clip)):
        raise ValueError(f"gradient clip norm must be positive, got {clip}")
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))


def meta_step(meta: MetaModel, optimizer, params, opt_state, images):
    """One outer step on a batch ``[B, H, W, C]``.

    Returns:
      ``(params, opt_state, metrics)``; metrics ``{"loss": MSE, "psnr": mean per-image PSNR}``
      after the inner loop (before this update), both scalars.
    """
    (loss, mse), grads = jax.value_and_grad(outer_loss, argnums=1, has_aux=True)(meta, params, images)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params = {**params, "meta_sgd_lr": clipped_lr(params)}
    psnr = jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-20)))
    return params, opt_state, {"loss": loss, "psnr": psnr}


def make_meta_step(meta: MetaModel, optimizer, mesh=None):
    """``step(params, opt_state, images) -> (params, opt_state, metrics)``, jitted.

    With a ``mesh`` (:func:`asmr_jax.sharding.data_mesh`), the batch axis of ``images``
    is split over its devices and parameters/optimizer state are replicated; XLA
    inserts the gradient all-reduce. The batch size must be divisible by ``mesh.size``.
    """
    fn = functools.partial(meta_step, meta, optimizer)
    if mesh is None:
        return jax.jit(fn)
    rep, bat = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(fn, in_shardings=(rep, rep, bat), out_shardings=(rep, rep, rep))


# ----------------------------------------------------------------------------- latents for new images
@functools.partial(jax.jit, static_argnums=(0, 1))
def _fit_chunk(meta: MetaModel, steps: int, params, images):
    def one(image):
        phi = inner_loop(meta, params, image, steps)
        pred = jnp.clip(render(meta, params, phi), 0.0, 1.0)
        return phi, -10.0 * jnp.log10(jnp.maximum(jnp.mean((pred - image) ** 2), 1e-20))

    return jax.vmap(one)(images)


@functools.partial(jax.jit, static_argnums=0)
def _render_chunk(meta: MetaModel, params, latents):
    return jax.vmap(lambda z: jnp.clip(render(meta, params, z), 0.0, 1.0))(latents)


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(start + chunk, n)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pads the leading axis to ``size`` (repeating row 0) so every chunk has one compiled shape."""
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def fit_latents(meta: MetaModel, params, images, steps: int | None = None, chunk: int = 64):
    """Latents of new images by ``steps`` inner steps (default ``meta.inner_steps``).

    Args:
      images: float ``[n, H, W, C]`` on ``[0, 1]`` (or one ``[H, W, C]`` image).
      steps: inner SGD steps (the meta-learned rates); more than ``k`` usually helps a bit.
      chunk: images per compiled call (memory bound).

    Returns:
      ``(latents [n, D] float32, psnrs [n] float64)``; PSNR in dB of the clipped render.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    check_images(images, "images")
    want = (*meta.shape, meta.channels)
    if images.shape[1:] != want:
        raise ValueError(f"images have shape {images.shape[1:]} per image, the model expects {want}")
    steps = meta.inner_steps if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    n, chunk = len(images), max(1, min(int(chunk), len(images)))
    latents, psnrs = [], []
    for a, b in _chunks(n, chunk):
        z, p = _fit_chunk(meta, steps, params, _pad(images[a:b], chunk))
        latents.append(np.asarray(z)[: b - a])
        psnrs.append(np.asarray(p)[: b - a])
    return np.concatenate(latents).astype(np.float32), np.concatenate(psnrs).astype(np.float64)


def render_latents(meta: MetaModel, params, latents, chunk: int = 64) -> np.ndarray:
    """Images ``[n, H, W, C]`` on ``[0, 1]`` (clipped) from latents ``[n, D]`` (or one ``[D]``)."""
    latents = np.asarray(latents, np.float32)
    if latents.ndim == 1:
        latents = latents[None]
    if latents.ndim != 2 or latents.shape[1] != meta.latent_dim:
        raise ValueError(f"latents must have shape [n, {meta.latent_dim}], got {latents.shape}")
    if not np.isfinite(latents).all():
        raise ValueError(f"latents have {int((~np.isfinite(latents)).sum())} NaN/inf values")
    n, chunk = len(latents), max(1, min(int(chunk), len(latents)))
    out = [np.asarray(_render_chunk(meta, params, _pad(latents[a:b], chunk)))[: b - a] for a, b in _chunks(n, chunk)]
    return np.concatenate(out)


# ----------------------------------------------------------------------------- checkpoints
def write_meta_json(directory, meta: MetaModel, extra: dict | None = None):
    """Writes ``directory/meta.json`` atomically."""
    body = {"format": FORMAT, "version": VERSION, "meta": meta.config(), **(extra or {})}
    path = os.path.join(directory, META_JSON)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(body, f, indent=2)
    os.replace(tmp, path)


def read_meta_json(directory) -> dict:
    """Reads and validates ``directory/meta.json``; errors say what ``directory`` is instead."""
    directory = os.fspath(directory)
    path = os.path.join(directory, META_JSON)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory} is not a directory: expected a meta-learning checkpoint folder")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(directory, "model.json")):
            raise ValueError(f"{directory} is a single-model checkpoint (asmr fit), not a meta-learning checkpoint")
        raise ValueError(f"{directory} is not a meta-learning checkpoint (no {META_JSON} inside)")
    body = io.read_format_json(path, FORMAT, VERSION, "an asmr-jax meta-learning file")
    return body


def abstract_params(meta: MetaModel, sharding_=None):
    """Shape/dtype tree of :meth:`MetaModel.init` (for restoring), optionally with a sharding."""
    tree = jax.eval_shape(meta.init, jax.random.key(0))
    s = sharding_ or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree)


def checkpoint_manager(workdir, keep: int = 3, create: bool = True):
    """The orbax ``CheckpointManager`` of a training ``workdir`` (items ``params``, ``opt_state``)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINTS)), options=options,
                                 item_names=("params", "opt_state"))


def save_meta(path, meta: MetaModel, params, extra: dict | None = None, overwrite: bool = False) -> str:
    """Exports shared parameters to a standalone folder (``meta.json`` + ``params/``), atomically."""
    import orbax.checkpoint as ocp

    from asmr_jax.io import atomic_dir

    with atomic_dir(path, overwrite=overwrite) as tmp:
        write_meta_json(tmp, meta, extra)
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(os.path.join(tmp, "params"), jax.device_get(params))
        ckptr.wait_until_finished()
    return os.path.abspath(os.fspath(path))


def load_meta_checkpoint(path, step: int | None = None):
    """Loads ``(meta, params)`` from a training workdir (latest or given ``step``) or a
    folder written by :func:`save_meta`.

    Raises ``ValueError`` naming the problem for a missing, foreign or corrupt checkpoint.
    """
    import orbax.checkpoint as ocp

    path = os.fspath(path)
    body = read_meta_json(path)
    try:
        meta = MetaModel.from_config(body["meta"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}/{META_JSON} holds an invalid meta config: {e}") from None
    target = abstract_params(meta)
    exported = os.path.isdir(os.path.join(path, "params"))
    mgr = None
    if exported:
        where = os.path.abspath(os.path.join(path, "params"))
    else:
        mgr = checkpoint_manager(path, create=False) if os.path.isdir(os.path.join(path, CHECKPOINTS)) else None
        step = mgr.latest_step() if (mgr is not None and step is None) else step
        if mgr is None or step is None:
            raise ValueError(f"{path} has no saved parameters (neither params/ nor a step under {CHECKPOINTS}/)")
        where = f"{path}/{CHECKPOINTS}/{step}"
    try:
        if exported:
            params = ocp.StandardCheckpointer().restore(where, target)
        else:
            params = mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
    except Exception as e:  # orbax raises many exception types for damaged or mismatched trees
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        raise ValueError(f"cannot restore parameters from {where}: {type(e).__name__}: {msg}") from None
    finally:
        if mgr is not None:
            mgr.close()
    return meta, params
