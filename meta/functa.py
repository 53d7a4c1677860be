"""Functa-style meta-learning (Dupont et al., 2022) over ASMR or SIREN.

Every knob means what it means in DeepMind's ``functa`` (``function_reps.py``,
``helpers.py``). Each signal ``x`` gets a latent ``phi`` of ``D`` values; one shared
linear map turns it into FiLM modulations of every hidden layer, added **inside** the
sine's ``w0`` scaling::

    mods(phi)  = phi @ W + b                                   [D] -> [L_h * n_mod * width]
    hidden i   : sin(w0 * (scale_i * (z W_i + b_i) + shift_i))  (ASMR: + M_i(x^i) inside too)
    phi_{j+1}  = phi_j - lr_scale * clip(alpha, 0, 1) * grad_phi [MSE + l2_weight * |phi_j|^2]

``k`` steps start from ``phi_0`` (zeros, or ``U(-s, s)`` drawn once at init with
``latent_init_scale = s``, shared and never meta-learned, as functa's ``LatentVector``).
``theta`` (every network weight, ASMR's modulators, ``W``, ``b``) and the meta-SGD rates
``alpha [D]`` are meta-learned with Adam on the loss after the ``k`` steps (with
``noise_std``: of ``phi_k + noise_std * N(0, 1)``), differentiated through them (second
order). Layout of ``mods``: per hidden layer, ``[scale - 1, shift]`` when both are
modulated (functa adds 1 to the scale part), else just the one kind.

Initialization as functa: ``W`` truncated normal (two standard deviations) with stddev
``1/sqrt(D)`` and ``b = 0`` (haiku ``Linear``'s default), ``alpha ~ U(0.005, 0.1)``. With
``functa_init`` the network's hidden biases start at 0 (haiku's default, where our SIREN
init draws them like the weights) and its output bias at 0.5 (functa adds ``+0.5`` to
the output; a bias starting at 0.5 is the same function and the same training).

Differences from functa, all on purpose: the rates are clipped to ``[0, 1]`` wherever they
are used and after every outer update (functa declares this clip but never applies it
in training); ``lr_scale`` (default 1) multiplies them; and the outer gradient is clipped
to global norm 1 by default (:func:`meta.optimize.make_optimizer`). SIREN's coordinates span
``[-1, 1]`` over pixel corners (functa: ``[0, 1]`` over pixel centres).

Everything is a pure function of explicit pytrees; the network is seen only through
``model.render(params, shifts, scales=...)``. Shared parameters are a dict::

    {"model": model.init(key), "latent_to_modulation": {"w": [D, S], "b": [S]}, "meta_sgd_lr": [D]}
    (+ "latent_init": [D] when latent_init_scale > 0)

The outer optimizer and the compiled meta step are in :mod:`meta.optimize`; fitting and
rendering the latents of new signals on the host, in chunks, in :mod:`meta.inference`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from asmr_jax import models
from asmr_jax.arrays import with_rank
from asmr_jax.siren import affine

META_SGD_INIT = (0.005, 0.1)


@dataclasses.dataclass(frozen=True)
class MetaModel:
    """A network plus the functa latent machinery (static facts only; hashable).

    Args:
      model: an ASMR or SIREN of any dimension (anything with ``render(params, shifts,
        scales=None)``, ``shift_widths``, ``init``, ``config``, ``w0``). A model whose class
        sets ``batched_render = True`` renders a batch of modulations in one call; others
        are rendered one latent at a time under ``vmap``.
      latent_dim: ``D``, values per signal (functa: 128..1024 for CelebA-HQ).
      inner_steps: ``k``, SGD steps of the inner loop (functa: 3).
      lr_scale: multiplies the meta-SGD rates in the inner step (functa: 1, implicit).
      modulate_shift, modulate_scale: which FiLM modulations the latent drives
        (functa's CelebA config: shift only).
      latent_init_scale: ``phi_0 ~ U(-s, s)``, drawn once at init, shared (functa: 0).
      l2_weight: ``l2_weight * sum(phi^2)`` added to the inner and outer loss (functa: 0).
      noise_std: Gaussian noise added to fitted latents before the outer loss, in
        training only (functa: 0).
      functa_init: hidden biases 0 and output bias 0.5 at init, as functa.
      meta_sgd: learn one inner rate per latent dim (functa's ``use_meta_sgd``); without
        it the inner step is plain SGD at ``lr_scale`` (functa's ``opt_inner.lr``).
      spatial: ``None`` for one global latent (functa), or a grid of cells per axis (an int
        for every axis): the latent is then ``[*spatial, D / prod(spatial)]``, one vector per
        cell (Spatial Functa, Bauer et al. 2023), mapped to that cell's modulations. For an
        ASMR the grid must be the cells of one of its coarse levels (``model.cell_grid(l)``,
        ``l <= L - 2``); for a SIREN it must divide the signal's shape. Latents are still
        handled flat, ``[D]`` (row-major over the grid), everywhere outside this module.
      spatial_kernel: side of the convolution that maps the latent grid to the modulation
        grid (odd; 1: each cell's modulations from its own vector only).
      latent_hidden: widths of SiLU hidden layers between the latent and the modulations
        (functa's ``layer_sizes``, where they are ReLU; its meta-learning config has none: one
        affine map). SiLU, because the inner loop starts every latent at zero, where a ReLU
        with a zero bias passes no gradient at all. With spatial latents the first layer is
        the ``spatial_kernel`` convolution and the others act on each cell alone, so the map
        still costs per cell, not per pixel.
    """

    model: object
    latent_dim: int
    inner_steps: int = 3
    lr_scale: float = 1.0
    modulate_shift: bool = True
    modulate_scale: bool = False
    latent_init_scale: float = 0.0
    l2_weight: float = 0.0
    noise_std: float = 0.0
    functa_init: bool = False
    meta_sgd: bool = True
    spatial: tuple[int, ...] | None = None
    spatial_kernel: int = 3
    latent_hidden: tuple[int, ...] = ()

    def __post_init__(self):
        if int(self.latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if int(self.inner_steps) < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if not (self.lr_scale > 0 and math.isfinite(self.lr_scale)):
            raise ValueError(f"lr_scale must be a positive number, got {self.lr_scale}")
        for name in ("latent_init_scale", "l2_weight", "noise_std"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if not (self.modulate_shift or self.modulate_scale):
            raise ValueError("at least one of modulate_shift and modulate_scale must be on")
        if not hasattr(self.model, "shift_widths") or not hasattr(self.model, "render"):
            raise ValueError(f"{type(self.model).__name__} cannot be modulated: it has no shift_widths/render")
        if self.modulate_scale and getattr(self.model, "kind", None) not in ("asmr", "siren"):
            raise ValueError(f"modulate_scale needs an ASMR or SIREN, got {getattr(self.model, 'kind', None)!r}")
        self._check_spatial()
        hidden = self.latent_hidden
        hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ValueError(f"latent_hidden must be positive layer widths, got {self.latent_hidden}")
        object.__setattr__(self, "latent_hidden", tuple(int(h) for h in hidden))
        object.__setattr__(self, "latent_dim", int(self.latent_dim))
        object.__setattr__(self, "inner_steps", int(self.inner_steps))
        for name in ("lr_scale", "latent_init_scale", "l2_weight", "noise_std"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("modulate_shift", "modulate_scale", "functa_init", "meta_sgd"):
            object.__setattr__(self, name, bool(getattr(self, name)))

    def _check_spatial(self):
        if self.spatial is None:
            return
        nd = len(self.model.shape)
        grid = self.spatial
        grid = (grid,) * nd if isinstance(grid, (int, np.integer)) else tuple(grid)
        if len(grid) != nd or any(int(g) != g or g < 1 for g in grid):
            raise ValueError(f"spatial must be a positive int or {nd} positive ints (cells per axis), "
                             f"got {self.spatial}")
        grid = tuple(int(g) for g in grid)
        kind = getattr(self.model, "kind", None)
        if kind == "asmr":
            self.model.cell_level(grid)  # raises naming the grids its coarse levels offer
        elif kind == "siren":
            from asmr_jax.siren import cell_blocks

            cell_blocks(self.model.shape, grid)
        else:
            raise ValueError(f"spatial latents need an ASMR or SIREN, got {kind!r}")
        cells = math.prod(grid)
        if int(self.latent_dim) % cells:
            raise ValueError(f"latent_dim {self.latent_dim} is not a multiple of the {cells} cells of the "
                             f"latent grid {grid}")
        k = int(self.spatial_kernel)
        if k != self.spatial_kernel or k < 1 or k % 2 == 0 or nd > 3:
            raise ValueError(f"spatial_kernel must be an odd int >= 1 (and the signal 1-3 D), "
                             f"got {self.spatial_kernel}")
        object.__setattr__(self, "spatial", grid)
        object.__setattr__(self, "spatial_kernel", k)

    @property
    def cell_dim(self) -> int:
        """Latent values per cell (``D`` for a global latent)."""
        return self.latent_dim // (math.prod(self.spatial) if self.spatial else 1)

    @property
    def map_shapes(self) -> list[tuple[int, ...]]:
        """Weight shapes of the latent map's layers, input first: the first is ``[D, out]``
        (global) or ``[*kernel, D / cells, out]`` (spatial), the others ``[in, out]``; the
        last layer's ``out`` is ``S``."""
        dims = (self.cell_dim, *self.latent_hidden, self.shift_dim)
        kernel = () if self.spatial is None else (self.spatial_kernel,) * len(self.spatial)
        return [(kernel if i == 0 else ()) + (a, b) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]

    @property
    def map_shape(self) -> tuple[int, ...]:
        """Shape of the latent map's first weight: ``[D, S]`` (global, no hidden layers) or
        ``[*kernel, D / cells, S]`` (spatial)."""
        return self.map_shapes[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.model.shape)

    @property
    def channels(self) -> int:
        return int(self.model.channels)

    @property
    def mods_per_unit(self) -> int:
        return int(self.modulate_scale) + int(self.modulate_shift)

    @property
    def shift_dim(self) -> int:
        """``S``: outputs of the latent map (every modulation of every hidden unit)."""
        return int(sum(self.model.shift_widths)) * self.mods_per_unit

    def init(self, key) -> dict:
        """Shared parameters (see the module docstring)."""
        k_model, k_map, k_lr, k_lat = jax.random.split(key, 4)
        d = self.latent_dim
        net = self.model.init(k_model)
        if self.functa_init:
            net = functa_network_init(net)
        # haiku Linear's (and Conv's) default: truncated normal at 2 stddev, stddev 1/sqrt(fan_in)
        shapes = self.map_shapes
        keys = [k_map] if len(shapes) == 1 else list(jax.random.split(k_map, len(shapes)))
        normal = lambda k, shape: jax.random.truncated_normal(k, -2.0, 2.0, shape, jnp.float32)  # noqa: E731
        layers = [{"w": normal(k, shape) / math.sqrt(math.prod(shape[:-1])), "b": jnp.zeros(shape[-1:], jnp.float32)}
                  for k, shape in zip(keys, shapes)]
        out = {"model": net, "latent_to_modulation": layers[-1] | ({"hidden": layers[:-1]} if len(layers) > 1 else {})}
        if self.meta_sgd:
            out["meta_sgd_lr"] = jax.random.uniform(k_lr, (d,), jnp.float32, *META_SGD_INIT)
        if self.latent_init_scale > 0:
            s0 = self.latent_init_scale
            out["latent_init"] = jax.random.uniform(k_lat, (d,), jnp.float32, -s0, s0)
        return out

    def num_params(self) -> int:
        """Meta-learned scalars: network + latent map + meta-SGD rates."""
        maps = sum(math.prod(shape) + shape[-1] for shape in self.map_shapes)
        return int(self.model.num_params()) + maps + self.latent_dim * self.meta_sgd

    def config(self) -> dict:
        out = {"model": self.model.config(), **{f.name: getattr(self, f.name)
                                                for f in dataclasses.fields(self) if f.name != "model"}}
        out["spatial"] = None if self.spatial is None else list(self.spatial)
        del out["latent_hidden"]  # recorded only where there are hidden layers: older records stay valid
        if self.latent_hidden:
            out["latent_hidden"] = list(self.latent_hidden)
        return out

    @classmethod
    def from_config(cls, config: dict) -> MetaModel:
        config = dict(config)
        if not isinstance(config.get("model"), dict):
            raise ValueError(f"meta config needs a 'model' dict, got keys {sorted(config)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"meta config has unknown fields {unknown}; known: {sorted(known)}")
        if isinstance(config.get("spatial"), list):
            config["spatial"] = tuple(config["spatial"])
        return cls(models.from_config(config.pop("model")), **config)


def functa_network_init(net: dict) -> dict:
    """Network params with hidden biases 0 and output bias 0.5 (functa's init)."""
    layers = [dict(layer, b=jnp.zeros_like(layer["b"])) for layer in net["layers"]]
    layers[-1]["b"] = jnp.full_like(layers[-1]["b"], 0.5)
    return {**net, "layers": layers}


# ----------------------------------------------------------------------------- pure functions
# Every function below takes one signal (latent [D], signal [*shape, C]) or a batch of them
# (latents [*batch, D], signals [*batch, *shape, C]); per-signal values come back [*batch].
# A batch goes through the network's batched render (one 2-D GEMM per layer over all
# signals; see asmr_jax.siren) rather than vmap: the same values, faster on CPU.
def latent_to_modulations(meta: MetaModel, params, latent) -> tuple[list | None, list | None]:
    """Latent ``[*batch, D]`` -> ``(shifts, scales)``, each ``None`` or one ``[*batch, width_i]`` per hidden layer."""
    m = params["latent_to_modulation"]
    layers = [*m.get("hidden", ()), m]
    flat = latent if meta.spatial is None else cell_latents(meta, latent)
    for i, layer in enumerate(layers):
        if i == 0 and meta.spatial is not None:
            flat = grid_conv(flat, layer["w"])  # [*batch, *grid, out]
            flat = flat + with_rank(layer["b"], flat.ndim)
        else:
            flat = affine(flat, layer)  # [*batch, (*grid,) out]
        if i < len(layers) - 1:
            flat = jax.nn.silu(flat)
    widths = meta.model.shift_widths
    cuts = np.cumsum([w * meta.mods_per_unit for w in widths])[:-1]
    shifts, scales = [], []
    for w, part in zip(widths, jnp.split(flat, cuts, axis=-1)):
        if meta.modulate_scale:
            scales.append(part[..., :w] + 1.0)
        if meta.modulate_shift:
            shifts.append(part[..., -w:])
    return (shifts if meta.modulate_shift else None), (scales if meta.modulate_scale else None)


def cell_latents(meta: MetaModel, latent):
    """Flat latents ``[*batch, D]`` as their grid ``[*batch, *spatial, D / cells]``."""
    return latent.reshape(latent.shape[:-1] + tuple(meta.spatial) + (meta.cell_dim,))


def grid_conv(x, w):
    """``SAME`` convolution of a grid ``x [*batch, *grid, c_in]`` with ``w [*kernel, c_in, c_out]``
    (1-3 grid axes) -> ``[*batch, *grid, c_out]``."""
    nd = w.ndim - 2
    batch = x.shape[: x.ndim - nd - 1]
    axes = "DHW"[3 - nd:]
    y = jax.lax.conv_general_dilated(x.reshape((-1,) + x.shape[len(batch):]), w, (1,) * nd, "SAME",
                                     dimension_numbers=(f"N{axes}C", f"{axes}IO", f"N{axes}C"))
    return y.reshape(batch + y.shape[1:])


def latent_to_shifts(meta: MetaModel, params, latent) -> list:
    """Latent ``[*batch, D]`` -> one shift ``[*batch, width_i]`` per hidden layer (shift modulation only)."""
    return latent_to_modulations(meta, params, latent)[0]


def _model_render(model, net, shifts, scales, grid=None):
    kwargs = ({} if scales is None else {"scales": scales}) | ({} if grid is None else {"grid": grid})
    return model.render(net, shifts, **kwargs)


def render(meta: MetaModel, params, latent):
    """Signal ``[*batch, *shape, C]`` (unclipped) of latents ``[*batch, D]``."""
    shifts, scales = latent_to_modulations(meta, params, latent)
    batch = jnp.shape(latent)[:-1]
    if not batch or getattr(meta.model, "batched_render", False):
        return _model_render(meta.model, params["model"], shifts, scales, meta.spatial)
    # a network without a batched render: one render per latent
    flat = lambda mods: None if mods is None else [v.reshape((-1,) + v.shape[len(batch):]) for v in mods]  # noqa: E731
    out = jax.vmap(lambda sh, sc: _model_render(meta.model, params["model"], sh, sc))(flat(shifts), flat(scales))
    return out.reshape(batch + out.shape[1:])


def point_values(meta: MetaModel, params, latent, coords):
    """The field of one latent ``[D]`` at integer ``coords [n, d]`` -> ``[n, C]``, point by
    point (:meth:`apply` of the network; spatial latents: each point takes its cell's
    modulations). The same function as :func:`render`, without activation sharing."""
    shifts, scales = latent_to_modulations(meta, params, latent)
    if meta.spatial is not None:
        coords = jnp.asarray(coords)
        extent = np.asarray(getattr(meta.model, "padded_shape", meta.model.shape))
        cell = coords * with_rank(np.asarray(meta.spatial), coords.ndim) // with_rank(extent, coords.ndim)  # [n, d]
        pick = lambda mods: None if mods is None else [v[tuple(cell.T)] for v in mods]  # noqa: E731  [n, K]
        shifts, scales = pick(shifts), pick(scales)
    kwargs = {} if scales is None else {"scales": scales}
    return meta.model.apply(params["model"], coords, shifts, **kwargs)


def image_mse(meta: MetaModel, params, latent, image):
    """MSE ``[*batch]`` of each latent's render against ``image [*batch, *shape, C]``."""
    err = (render(meta, params, latent) - image) ** 2
    return jnp.mean(err, axis=tuple(range(jnp.ndim(latent) - 1, err.ndim)))


def inner_loss(meta: MetaModel, params, latent, image):
    """The loss ``[*batch]`` the inner loop descends: MSE plus ``l2_weight * sum(latent^2)`` (functa's)."""
    loss = image_mse(meta, params, latent, image)
    if meta.l2_weight:
        loss = loss + meta.l2_weight * jnp.sum(latent**2, axis=-1)
    return loss


def inner_grad(meta: MetaModel, params, latent, image):
    """``d inner_loss / d latent``, ``[*batch, D]``: each signal's own gradient (the losses
    are independent, so the gradient of their sum is the stack of per-signal gradients)."""
    return jax.grad(lambda z: jnp.sum(inner_loss(meta, params, z, image)))(latent)


def clipped_lr(params):
    """Meta-SGD rates clipped to ``[0, 1]``, shape ``[D]`` (1 without meta-SGD)."""
    if "meta_sgd_lr" not in params:
        return jnp.float32(1.0)
    return jnp.clip(params["meta_sgd_lr"], 0.0, 1.0)


def start_latent(meta: MetaModel, params, batch: tuple[int, ...] = ()):
    """``phi_0 [*batch, D]``: zeros, or the shared ``latent_init`` (never meta-learned)."""
    if "latent_init" in params:
        phi = jax.lax.stop_gradient(params["latent_init"])
    else:
        phi = jnp.zeros((meta.latent_dim,), params["latent_to_modulation"]["w"].dtype)
    return jnp.broadcast_to(phi, tuple(batch) + phi.shape)


def inner_loop(meta: MetaModel, params, image, steps: int | None = None, latent=None, remat: bool = False,
               first_order: bool = False):
    """``steps`` (default ``meta.inner_steps``) meta-SGD steps on the latent of each signal.

    Args:
      image: ``[*shape, C]``, or a batch ``[*batch, *shape, C]``.
      latent: optional start ``[*batch, D]`` (default :func:`start_latent`).
      remat: recompute each step's forward in the backward pass (``jax.checkpoint``), a
        lever for accelerators; on CPU XLA plans the same memory with and without it
        (measured; use ``microbatch`` of :func:`meta_step` there).
      first_order: stop the gradient through each inner gradient (first-order MAML).

    Returns:
      the fitted latents ``[*batch, D]``; differentiable w.r.t. ``params`` (second order).
    """
    steps = meta.inner_steps if steps is None else int(steps)
    batch = jnp.shape(image)[: jnp.ndim(image) - len(meta.shape) - 1]
    latent = start_latent(meta, params, batch) if latent is None else latent
    lr = meta.lr_scale * clipped_lr(params)  # [D]

    def body(phi, _):
        g = inner_grad(meta, params, phi, image)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return phi - with_rank(lr, g.ndim) * g, None

    if remat:
        body = jax.checkpoint(body)
    # Unrolled for the training k (XLA fuses across steps); rolled beyond it, so that
    # encoding with hundreds of steps compiles in bounded time.
    unroll = True if steps <= max(meta.inner_steps, 1) else max(meta.inner_steps, 1)
    latent, _ = jax.lax.scan(body, latent, None, length=steps, unroll=unroll)
    return latent


def outer_loss(meta: MetaModel, params, images, key=None, remat: bool = False, first_order: bool = False):
    """Mean loss after the inner loop over a batch ``[B, *shape, C]``; aux: per-signal MSE ``[B]``.

    ``key`` draws the ``noise_std`` noise on the fitted latents (needed only then).
    """
    if meta.noise_std and key is None:
        raise ValueError("noise_std > 0 needs a PRNG key for the outer loss")
    phi = inner_loop(meta, params, images, remat=remat, first_order=first_order)  # [B, D]
    if meta.noise_std:
        phi = phi + meta.noise_std * jax.random.normal(key, phi.shape, phi.dtype)
    mse_fn = jax.checkpoint(image_mse, static_argnums=0) if remat else image_mse
    mse = mse_fn(meta, params, phi, images)  # [B]
    loss = mse + meta.l2_weight * jnp.sum(phi**2, axis=-1) if meta.l2_weight else mse
    return jnp.mean(loss), mse
