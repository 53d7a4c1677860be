"""Meta-training configs as Python files (big_vision style).

A config file defines ``get_config(arg: str | None) -> ml_collections.ConfigDict`` whose
fields are exactly those of :class:`meta.config.TrainConfig`; its docstring states the
command, the runtime and the expected result. Defaults live in one place, the
dataclass: :func:`defaults` reads them from there, and a config file changes only what
differs.

    asmr meta-train --config cpu --workdir runs/cpu                   # a file in meta/configs/
    asmr meta-train --config functa_celebahq64:asmr,latent_dim=256 --workdir runs/celeba
    asmr meta-train --config my_config.py:smoke --set steps=10 --set lr=1e-4 --workdir runs/x

Nothing below this package sees a ConfigDict: :func:`to_config` turns it into the
:class:`~meta.config.TrainConfig` that :func:`meta.train.train` takes.
"""

from __future__ import annotations

import ast
import importlib.util
import os

from ml_collections import ConfigDict

from meta.config import TrainConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def defaults() -> ConfigDict:
    """Every field of :class:`meta.config.TrainConfig`, at its default value."""
    return ConfigDict(TrainConfig().as_dict())


def parse_arg(arg: str | None) -> tuple[list[str], dict]:
    """``"asmr,smoke,latent_dim=256"`` -> ``(["asmr", "smoke"], {"latent_dim": 256})``;
    values are Python literals."""
    words, fields = [], {}
    for part in filter(None, (arg or "").split(",")):
        if "=" in part:
            k, v = part.split("=", 1)
            fields[k.strip()] = _literal(v.strip())
        else:
            words.append(part.strip())
    return words, fields


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as a dataset name


def set_field(config: ConfigDict, assignment: str) -> ConfigDict:
    """Applies one ``key=value`` override (value parsed as a Python literal, else a string)."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} must look like key=value")
    key, text = (s.strip() for s in assignment.split("=", 1))
    if key not in config:
        raise ValueError(f"override {assignment!r}: unknown field {key!r}; fields: {sorted(config)}")
    value = _literal(text)
    old = config[key]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, list) and isinstance(value, (int, tuple)) and not isinstance(value, bool):
        value = list(value) if isinstance(value, tuple) else [value]  # a list field given one value
    try:
        config[key] = value
    except TypeError:
        raise ValueError(f"override {assignment!r}: {key} is {type(old).__name__} ({old!r}), "
                         f"got {type(value).__name__}") from None
    return config


def load(spec: str, overrides=()) -> ConfigDict:
    """The config named by ``spec = FILE[:ARG]`` with ``overrides`` (``key=value`` strings).

    ``FILE`` is a path to a ``.py`` file or the name of one in ``meta/configs/``.
    """
    name, _, arg = str(spec).partition(":")
    path = name if name.endswith(".py") else os.path.join(HERE, f"{name}.py")
    if not os.path.isfile(path):
        shipped = sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and not f.startswith("_"))
        raise ValueError(f"config {name!r}: no file {path}; shipped configs: {', '.join(shipped)}")
    mod_spec = importlib.util.spec_from_file_location(f"_asmr_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config(arg)")
    config = module.get_config(arg or None)
    for assignment in overrides:
        set_field(config, assignment)
    return config


def to_config(config: ConfigDict) -> TrainConfig:
    """The :class:`~meta.config.TrainConfig` of a loaded config (validated)."""
    return TrainConfig.from_mapping(config)


def shipped() -> list[str]:
    """Names of the config files in ``meta/configs/``."""
    return sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and not f.startswith("_"))


def equal_params_width(config: ConfigDict, kind: str, target: int, channels: int) -> int:
    """Hidden width of a ``kind`` network (``config``'s other fields) whose shared parameter
    count is closest to ``target``."""
    from asmr_jax.models import match_width

    def count(w):
        c = ConfigDict(config.to_dict())
        c.model, c.width = kind, w
        return load_meta(c, channels).num_params()

    return match_width(count, target)


def channels_of(config: ConfigDict) -> int:
    """Values per pixel of the config's dataset (reads one test image)."""
    from asmr_jax.datasets import load_dataset

    return load_dataset(config.dataset, "test", config.resolution, config.data_dir).channels


def load_meta(config: ConfigDict, channels: int | None = None):
    """The :class:`meta.functa.MetaModel` a config describes."""
    return to_config(config).meta_model(channels_of(config) if channels is None else channels)


def memory_estimate(config: ConfigDict, channels: int | None = None) -> dict:
    """XLA's memory plan (bytes) of one meta step of ``config`` (compiled, not run)."""
    from meta import optimize

    meta = load_meta(config, channels)
    return optimize.memory_estimate(meta, optimize.make_optimizer(config.lr, config.clip), config.batch_size,
                                  remat=config.remat, microbatch=config.microbatch)
