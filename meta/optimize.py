"""The outer loop's optimizer and its compiled meta step (one device, or a data mesh).

:func:`meta_step` is the pure update (gradient of :func:`meta.functa.outer_loss` through
the inner loop, Adam, the rates' clip); :func:`make_meta_step` jits it for a mesh and
:func:`memory_estimate` asks XLA what one step needs before anything runs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax

from asmr_jax import fit, metrics, sharding
from meta.config import OUTER_CLIP
from meta.functa import MetaModel, clipped_lr, outer_loss

FINAL_LR_DIVISOR = 100.0  # a cosine-decayed outer rate ends at lr / 100


def make_optimizer(lr: float = 3e-6, clip: float | None = OUTER_CLIP,
                   decay_steps: int | None = None) -> optax.GradientTransformation:
    """Adam on every shared parameter (functa: lr 3e-6 for its width-512 depth-15 SIREN).

    The outer gradient is first clipped to global norm ``clip`` (``None``: no clipping, as
    functa): at rates far above functa's, the rare second-order spikes of the inner loop
    otherwise throw the shared weights out of the basin (experiments/README.md shows a run
    with and without).

    ``decay_steps``: the rate follows a cosine from ``lr`` down to ``lr / 100`` over that
    many steps (``None``: constant, as functa); long runs at a high constant rate lose
    what they learned (experiments/README.md).
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"outer learning rate must be positive, got {lr}")
    if decay_steps is not None and int(decay_steps) < 1:
        raise ValueError(f"decay_steps must be >= 1 (steps of the cosine decay), got {decay_steps}")
    adam = fit.make_optimizer(float(lr), None if decay_steps is None else int(decay_steps),
                              decay_steps is not None, final_lr=float(lr) / FINAL_LR_DIVISOR)
    if clip is None:
        return adam
    if not (clip > 0 and math.isfinite(clip)):
        raise ValueError(f"gradient clip norm must be positive, got {clip}")
    return optax.chain(optax.clip_by_global_norm(clip), adam)


def meta_step(meta: MetaModel, optimizer, params, opt_state, images, key=None, remat: bool = False,
              microbatch: int | None = None):
    """One outer step on a batch ``[B, *shape, C]``.

    Args:
      key: PRNG key for ``noise_std`` (ignored otherwise).
      remat: see :func:`meta.functa.inner_loop`.
      microbatch: split the batch into chunks of this many signals whose gradients are
        summed in a ``lax.scan`` (same result, memory of one chunk). ``None``: one pass.

    Returns:
      ``(params, opt_state, metrics)``; metrics ``{"loss": loss, "psnr": mean per-signal
      PSNR}`` after the inner loop (before this update), both scalars.
    """
    b = images.shape[0]
    grad_fn = jax.value_and_grad(outer_loss, argnums=1, has_aux=True)
    if microbatch is None or microbatch >= b:
        (loss, mse), grads = grad_fn(meta, params, images, key, remat)
    else:
        if b % microbatch:
            raise ValueError(f"batch {b} is not a multiple of microbatch {microbatch}")
        chunks = images.reshape((b // microbatch, microbatch) + images.shape[1:])
        keys = jax.random.split(key, b // microbatch) if meta.noise_std else None

        def body(acc, xs):
            imgs, k = xs
            (loss_, mse_), g = grad_fn(meta, params, imgs, k, remat)
            return jax.tree.map(jnp.add, acc, g), (loss_, mse_)

        zero = jax.tree.map(jnp.zeros_like, params)
        grads, (losses, mse) = jax.lax.scan(body, zero, (chunks, keys))
        grads = jax.tree.map(lambda g: g / (b // microbatch), grads)
        loss, mse = jnp.mean(losses), mse.reshape(b)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if "meta_sgd_lr" in params:
        params = {**params, "meta_sgd_lr": clipped_lr(params)}
    psnr = jnp.mean(metrics.mse_to_psnr(mse))
    return params, opt_state, {"loss": loss, "psnr": psnr}


def make_meta_step(meta: MetaModel, optimizer, mesh=None, remat: bool = False, microbatch: int | None = None):
    """``step(params, opt_state, images, key=None) -> (params, opt_state, metrics)``, jitted.

    With a ``mesh`` (:func:`asmr_jax.sharding.data_mesh`, possibly spanning processes),
    the batch axis of ``images`` is split over its devices and parameters/optimizer state
    are replicated; XLA inserts the gradient all-reduce. The batch size must be divisible
    by ``mesh.size`` (and ``microbatch`` by nothing: chunks are cut per step).
    """
    fn = functools.partial(meta_step, meta, optimizer, remat=remat, microbatch=microbatch)
    if mesh is None:
        jitted = jax.jit(fn)
    else:
        rep, bat = sharding.replicated(mesh), sharding.batch_sharding(mesh)
        jitted = jax.jit(fn, in_shardings=(rep, rep, bat, rep), out_shardings=(rep, rep, rep))

    def step(params, opt_state, images, key=None):
        return jitted(params, opt_state, images, key)

    def compile_for(params, opt_state, images, key=None):
        """Compiles the step for these arguments (arrays or shapes) without running it; the
        next call with the same shapes reuses the executable. Returns it (``memory_plan``)."""
        return jitted.lower(params, opt_state, images, key).compile()

    step.compile_for = compile_for
    step._cache_size = jitted._cache_size  # for no-recompile checks
    return step


def memory_estimate(meta: MetaModel, optimizer, batch_size: int, remat: bool = False,
                    microbatch: int | None = None) -> dict:
    """XLA's compiled memory analysis of one meta step on this backend (nothing is run).

    Returns bytes: ``arguments``, ``outputs``, ``temporaries``, ``peak`` (their sum, less
    aliased buffers), as the compiler plans them for one device holding the whole batch.
    """
    params = jax.eval_shape(meta.init, jax.random.key(0))
    opt_state = jax.eval_shape(optimizer.init, params)
    images = jax.ShapeDtypeStruct((int(batch_size), *meta.shape, meta.channels), jnp.float32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    fn = functools.partial(meta_step, meta, optimizer, remat=remat, microbatch=microbatch)
    return memory_plan(jax.jit(fn).lower(params, opt_state, images, key).compile())


def memory_plan(compiled) -> dict:
    """Bytes XLA plans for a compiled function (``{}`` where the backend does not say):
    ``arguments``, ``outputs``, ``temporaries``, ``aliased`` and ``peak`` (their sum, less aliased)."""
    ma = compiled.memory_analysis()
    if ma is None:  # some backends do not report
        return {}
    out = {"arguments": int(ma.argument_size_in_bytes), "outputs": int(ma.output_size_in_bytes),
           "temporaries": int(ma.temp_size_in_bytes), "aliased": int(ma.alias_size_in_bytes)}
    out["peak"] = out["arguments"] + out["outputs"] + out["temporaries"] - out["aliased"]
    return out
