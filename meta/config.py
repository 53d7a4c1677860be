"""The meta-training configuration: every field once, with its default, type, functa value and help.

:class:`TrainConfig` is what :func:`meta.train.train` takes; the ``asmr meta-train``
flags, the run record in ``meta.json`` (what a resume must not change) and the
validation are generated from its fields. Config files (:mod:`meta.configs`) are
``ml_collections`` files that change what differs and are converted here, at one place
(:func:`TrainConfig.from_mapping`).

>>> c = TrainConfig(latent_dim=256, spatial=4, spatial_kernel=1)
>>> c.replace(lr=1e-4).lr, c.record()["spatial"]
(0.0001, 4)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os

LR_DECAYS = ("none", "cosine")
OUTER_CLIP = 1.0  # global-norm clip of the outer gradient (functa: none)


def _field(default, help: str, *, functa=None, run: bool = True, parse=None, cli: bool = True):
    """A config field. ``run``: part of the run's identity (a resume must keep it);
    ``parse``: reads the flag's text (default: the default's type); ``functa``: DeepMind
    functa's value, where it has one."""
    return dataclasses.field(default=default, metadata={"help": help, "functa": functa, "run": run,
                                                        "parse": parse, "cli": cli})


def latent_grid(text: str):
    """``'8'`` -> 8 (every axis), ``'8,4'`` -> (8, 4)."""
    import argparse

    try:
        parts = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected cells per axis like 8 or 8,8, got {text!r}") from None
    return parts[0] if len(parts) == 1 else parts


def _widths(text: str):
    """``'256,512'`` -> (256, 512); ``''`` -> ()."""
    import argparse

    try:
        return tuple(int(p) for p in str(text).split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer widths like 512 or 256,512, got {text!r}") from None


def _bases(text: str):
    from asmr_jax import coords

    return coords.parse_bases(text)


def _plain(value):
    """JSON-shaped value: tuples become lists, numpy scalars Python numbers."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    return value


def _tuple(value):
    return tuple(_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One meta-training run (see :func:`meta.train.train`). Fields are validated on creation."""

    # ------------------------------------------------------------------ data
    dataset: str = _field("patches", "'patches' (bundled photo patches), 'lfw' (bundled faces), 'folder:DIR' "
                                     "(your images) or a TFDS name (cifar10, celeb_a, ...) prepared under "
                                     "--data-dir")
    data_dir: str | None = _field(None, "TFDS data directory (array_record files)", parse=str)
    resolution: int | tuple | None = _field(32, "image side (square); None: the dataset's own shape")
    patch_stride: int | None = _field(None, "'patches' only: pixels between the corners of neighbouring training "
                                            "patches (default: the side, non-overlapping tiles; 8 at side 32 cuts "
                                            "16x as many, overlapping patches; test patches stay tiles)", parse=int)
    # ------------------------------------------------------------------ network
    model: str | dict = _field("asmr", "network family: asmr or siren (or a registered model's config dict)")
    width: int = _field(128, "hidden width")
    depth: int | None = _field(None, "SIREN layers incl. output (default: --levels)", parse=int)
    levels: int | None = _field(4, "ASMR levels = layers (also SIREN depth when --depth is not given)", parse=int)
    bases: tuple | None = _field(None, "ASMR bases, e.g. '2,2,2,4' (overrides --levels)", parse=_bases)
    w0: float = _field(30.0, "sine frequency", functa=30.0)
    # ------------------------------------------------------------------ latents (MetaModel fields)
    latent_dim: int = _field(64, "latent values per image (D)", functa="128..1024")
    inner_steps: int = _field(3, "inner SGD steps (k)", functa=3)
    lr_scale: float = _field(1.0, "multiplies the meta-SGD rates in the inner step; without meta-SGD, the "
                                  "inner rate", functa=1.0)
    modulate_shift: bool = _field(True, "latent drives FiLM shifts", functa=True)
    modulate_scale: bool = _field(False, "latent drives FiLM scales", functa=False)
    latent_init_scale: float = _field(0.0, "start latent ~ U(-s, s), drawn once and shared", functa=0.0)
    l2_weight: float = _field(0.0, "weight of sum(latent^2) in the inner and outer loss", functa=0.0)
    noise_std: float = _field(0.0, "Gaussian noise on fitted latents before the outer loss", functa=0.0)
    functa_init: bool = _field(False, "hidden biases 0 and output bias 0.5 at init, as functa")
    meta_sgd: bool = _field(True, "learn per-dimension inner rates", functa=True)
    spatial: tuple | None = _field(None, "latent grid, cells per axis ('8' or '8,8'; default: one global latent, "
                                         "as functa). ASMR: the cells of a coarse level; SIREN: must divide the "
                                         "image. --latent-dim is the total (grid x channels)", parse=latent_grid)
    spatial_kernel: int = _field(3, "side of the convolution mapping the latent grid to modulations (odd; 1: "
                                    "per cell)")
    # ------------------------------------------------------------------ outer loop
    latent_hidden: tuple = _field((), "widths of SiLU hidden layers in the latent-to-modulation map, e.g. '512' "
                                      "(default none: one affine map)", functa=(), parse=_widths)
    augment: bool = _field(False, "turn each training image by a random symmetry of the square (rotations by 90 "
                                  "degrees, mirrors) and permute its channels, a fresh draw every step (square "
                                  "images only)", functa=False)
    batch_size: int = _field(16, "images per outer step (global, over all devices and processes)")
    steps: int = _field(500, "total outer steps (a resumed run continues up to this count)", run=False)
    lr: float = _field(3e-4, "outer Adam learning rate", functa=3e-6)
    clip: float | None = _field(OUTER_CLIP, "global-norm clip of the outer gradient (None: none)", functa=None,
                                parse=float)
    lr_decay: str = _field("none", "outer rate schedule: none (constant, as functa) or cosine (lr -> lr/100 over "
                                   "--steps; a resume must keep --steps)", functa="none")
    seed: int = _field(0, "init and data-order seed, in [0, 2^32)")
    remat: bool = _field(False, "recompute each inner step in the backward pass (less memory, slower)", run=False)
    microbatch: int | None = _field(None, "sum gradients over chunks of this many images (less memory, same "
                                          "result)", run=False, parse=int)
    # ------------------------------------------------------------------ evaluation, checkpoints, logging
    eval_every: int = _field(100, "test evaluation period (steps)", run=False)
    eval_images: int = _field(64, "test images used by evaluations", run=False)
    eval_more_steps: int = _field(10, "also report test PSNR after this many inner steps", run=False)
    eval_at: tuple = _field((), "extra steps at which to evaluate", run=False, cli=False)
    checkpoint_every: int = _field(100, "checkpoint period (plus one at the end)", run=False)
    keep: int = _field(3, "checkpoints kept", run=False)
    log_every: int = _field(25, "steps between metric fetches from the device", run=False)
    prefetch: int = _field(2, "batches loaded ahead in the background (0: none)", run=False)
    max_seconds: float | None = _field(None, "stop (and checkpoint) after this much training time (counted "
                                             "after the first step's compilation)", run=False, parse=float)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in dataclasses.fields(self):  # text from a config argument or a file, read as its flag is
            v, parse = getattr(self, f.name), f.metadata["parse"]
            if isinstance(v, str) and parse is not None and parse is not str:
                try:
                    set_(f.name, parse(v))
                except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
                    raise ValueError(f"{f.name}: {e}") from None
        res = self.resolution
        set_("resolution", None if res is None else int(res) if isinstance(res, numbers.Integral) else _tuple(res))
        set_("model", dict(self.model) if isinstance(self.model, dict) else str(self.model))
        set_("data_dir", None if self.data_dir is None else os.fspath(self.data_dir))
        set_("bases", None if self.bases is None else _tuple(self.bases))
        set_("spatial", None if self.spatial is None else
             int(self.spatial) if isinstance(self.spatial, numbers.Integral) else _tuple(self.spatial))
        set_("eval_at", tuple(int(s) for s in self.eval_at))
        hidden = self.latent_hidden
        set_("latent_hidden", (int(hidden),) if isinstance(hidden, numbers.Integral) else _tuple(hidden))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(f.default, bool):
                set_(f.name, bool(v))
            elif isinstance(f.default, float) and v is not None:
                set_(f.name, float(v))
            elif isinstance(f.default, int) and v is not None:
                if isinstance(v, float) and not v.is_integer():
                    raise ValueError(f"{f.name} must be an integer, got {v}")
                set_(f.name, int(v))
        for name in ("max_seconds", "clip"):
            if getattr(self, name) is not None:
                set_(name, float(getattr(self, name)))
        self._check()

    def _check(self):
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {', '.join(map(repr, LR_DECAYS))}, got {self.lr_decay!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2^32), got {self.seed}")
        for name in ("lr", "w0", "lr_scale"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive finite number, got {getattr(self, name)}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number (or None: no clip), got {self.clip}")
        for name in ("steps", "batch_size", "width", "eval_every", "checkpoint_every", "keep", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (0: load each batch when it is needed), got {self.prefetch}")
        if self.eval_images < 1:
            raise ValueError(f"eval_images must be >= 1 (test images per evaluation), got {self.eval_images}")
        if self.microbatch is not None and (self.microbatch < 1 or self.batch_size % self.microbatch):
            raise ValueError(f"microbatch must be a divisor of batch_size {self.batch_size}, got {self.microbatch}")
        if self.patch_stride is not None:
            if self.dataset != "patches":
                raise ValueError(f"patch_stride applies to the bundled 'patches' dataset, not {self.dataset!r}")
            side = self.resolution if isinstance(self.resolution, int) else None
            if not (self.patch_stride >= 1 and (side is None or self.patch_stride <= side)):
                raise ValueError(f"patch_stride must be in [1, resolution = {side}] pixels, got {self.patch_stride}")
        if self.max_seconds is not None and not (self.max_seconds > 0):
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")

    # ------------------------------------------------------------------ views
    def replace(self, **changes) -> TrainConfig:
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise TypeError(f"TrainConfig has no fields {unknown}; fields: {field_names()}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Every field, JSON-shaped (lists for tuples)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def record(self) -> dict:
        """The fields that define the run (saved in ``meta.json``; a resume must match them),
        plus ``decay_steps``: the schedule's length, which a cosine-decayed run fixes."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata["run"]}
        out["decay_steps"] = self.steps if self.lr_decay == "cosine" else None
        return out

    @classmethod
    def from_mapping(cls, mapping) -> TrainConfig:
        """From a dict or ``ml_collections.ConfigDict`` of fields (unknown ones refused)."""
        values = mapping.to_dict() if hasattr(mapping, "to_dict") else dict(mapping)
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ValueError(f"config has fields that meta-training does not take: {unknown}")
        return cls(**values)

    def meta_kwargs(self) -> dict:
        """The :class:`meta.functa.MetaModel` fields of this config."""
        from meta.functa import MetaModel

        names = {f.name for f in dataclasses.fields(MetaModel)} - {"model"}
        return {k: getattr(self, k) for k in names}

    def meta_model(self, channels: int, shape=None):
        """The :class:`meta.functa.MetaModel` this config describes for ``channels``-valued
        signals of ``shape`` (default: the square ``resolution``)."""
        from asmr_jax import models
        from meta.functa import MetaModel

        if shape is None:
            if self.resolution is None:
                raise ValueError("resolution is None (the dataset's own shape): pass the signals' shape")
            shape = (self.resolution,) * 2 if isinstance(self.resolution, int) else self.resolution
        shape = tuple(int(s) for s in shape)
        if isinstance(self.model, dict):
            net = models.from_config(self.model)
            if tuple(net.shape) != shape or net.channels != channels:
                raise ValueError(f"model config is for {net.shape} x {net.channels}, the data is "
                                 f"{shape} x {channels}")
        else:
            net = models.build(self.model, shape, channels, width=self.width, depth=self.depth,
                               levels=self.levels, bases=self.bases, w0=self.w0)
        return MetaModel(net, **self.meta_kwargs())


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def fields():
    """``dataclasses.fields(TrainConfig)``: each with ``metadata`` ``help``, ``functa``, ``run``,
    ``parse``, ``cli``."""
    return dataclasses.fields(TrainConfig)
