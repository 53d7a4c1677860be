"""Meta-learning checkpoints: the run record, orbax steps, digests, exports, loading.

A training ``workdir`` holds::

    meta.json             format, version, the MetaModel config and the run's training record
    checkpoints/<step>/   orbax CheckpointManager steps (items params, opt_state); the last ``keep``
    digests.json          per step: sha256 of each restored item and of the step's files

An exported folder (:func:`export`) holds ``meta.json`` (with the parameters' sha256) and
``params/``. :func:`load` reads either. Every restore checks the step's files before orbax
reads them and the restored trees after; a damaged, missing or foreign step is refused with
:class:`DamagedCheckpointError`, which names the other steps that can be used instead.
"""

from __future__ import annotations

import json
import os

import jax

from asmr_jax import io, sharding
from meta.functa import MetaModel

FORMAT = "asmr-jax-meta"
VERSION = 3  # 3 renamed the parameters' "latent_to_shift" (it also holds scales) to "latent_to_modulation"
READABLE_VERSIONS = (2, 3)
VERSION_2_NAMES = {"latent_to_modulation": "latent_to_shift"}  # this version's key -> version 2's
META_JSON = "meta.json"
CHECKPOINTS = "checkpoints"
DIGESTS = "digests.json"
ITEMS = ("params", "opt_state")


class DamagedCheckpointError(ValueError):
    """A checkpoint step that cannot be restored, or whose parameters fail their digest."""


# ----------------------------------------------------------------------------- the run record
def write_meta_json(directory, meta: MetaModel, extra: dict | None = None):
    """Writes ``directory/meta.json`` atomically."""
    body = {"format": FORMAT, "version": VERSION, "meta": meta.config(), **(extra or {})}
    io.write_json(os.path.join(directory, META_JSON), body)


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
    return io.read_format_json(path, FORMAT, READABLE_VERSIONS, "an asmr-jax meta-learning file")


def renamed(tree, names: dict):
    """``tree`` with every dict key in ``names`` replaced by ``names[key]`` (at any depth,
    through the tuples and named tuples of optimizer states)."""
    if isinstance(tree, dict):
        return {names.get(k, k): renamed(v, names) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(renamed(v, names) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(renamed(v, names) for v in tree)
    return tree


def saved_names(path, abstract_params_) -> tuple[dict, str | None]:
    """``(names, mismatch)`` of the parameters saved at ``path``: ``names`` maps this
    version's keys to the saved ones (``{}``, or :data:`VERSION_2_NAMES` for a step saved
    before the rename); ``mismatch`` says why neither layout fits (``None`` if one does)."""
    mismatch = io.layout_mismatch(path, abstract_params_)
    if mismatch and io.layout_mismatch(path, renamed(abstract_params_, VERSION_2_NAMES)) is None:
        return VERSION_2_NAMES, None
    return {}, mismatch


def abstract_params(meta: MetaModel, sharding_=None):
    """Shape/dtype tree of :meth:`MetaModel.init` (for restoring), optionally with a sharding."""
    tree = jax.eval_shape(meta.init, jax.random.key(0))
    s = sharding_ or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree)


# ----------------------------------------------------------------------------- orbax steps and digests
def manager(workdir, keep: int = 3, create: bool = True):
    """The orbax ``CheckpointManager`` of a training ``workdir`` (items ``params``, ``opt_state``)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINTS)), options=options,
                                 item_names=ITEMS)


def record_digest(workdir, step: int, items: dict):
    """Adds the digests of ``step``'s saved items (name -> host tree) and of its files to
    ``workdir/digests.json``."""
    path = os.path.join(workdir, DIGESTS)
    digests = {}
    if os.path.isfile(path):
        with open(path) as f:
            digests = json.load(f)
    entry = {k: io.params_digest(v) for k, v in items.items()}
    entry["files"] = io.files_digest(os.path.join(workdir, CHECKPOINTS, str(int(step))))
    digests[str(int(step))] = entry
    io.write_json(path, digests)


def recorded_digests(workdir, step: int) -> dict:
    """``{item: sha256 hex, "files": {...}}`` recorded for ``step`` (empty if none was recorded)."""
    path = os.path.join(workdir, DIGESTS)
    if not os.path.isfile(path):
        if os.path.isdir(os.path.join(workdir, CHECKPOINTS)):  # every save records its digests here
            raise DamagedCheckpointError(f"{path} is missing: it records the digests of the checkpoints in "
                                         f"{workdir}/{CHECKPOINTS}, which are not used without it")
        return {}
    try:
        with open(path) as f:
            return json.load(f).get(str(int(step))) or {}
    except (OSError, ValueError) as e:
        raise DamagedCheckpointError(f"{path} is corrupt ({e}); it records the checkpoints' digests") from None


def restore_step(mgr, workdir, step: int, items: dict) -> dict:
    """Restores ``items`` (name -> abstract tree) of checkpoint ``step`` and checks their digests.

    Raises :class:`DamagedCheckpointError` naming the step, why, and the other steps to use instead.
    """
    import orbax.checkpoint as ocp

    where = f"{workdir}/{CHECKPOINTS}/{step}"
    others = [s for s in mgr.all_steps() if s != step]
    hint = (f"; other saved steps: {sorted(others)} (continue from one with resume_step=N / --resume-step N, "
            f"or load it with step=N / --step N)" if others else "; no other step is saved")
    if step not in mgr.all_steps():
        raise DamagedCheckpointError(f"{workdir} has no checkpoint step {step}{hint}")
    digests = recorded_digests(workdir, step)
    try:
        io.check_files(where, digests.get("files"), f"checkpoint step {step} ({where})")
    except ValueError as e:
        raise DamagedCheckpointError(f"cannot restore checkpoint step {step} from {where}: {e}{hint}") from None
    names = {}
    if "params" in items:  # a step saved before the rename is restored under its names, then renamed
        names, mismatch = saved_names(os.path.join(where, "params"), items["params"])
        if mismatch:
            raise DamagedCheckpointError(f"cannot restore checkpoint step {step} from {where}: {mismatch}{hint}")
    items = {k: renamed(v, names) for k, v in items.items()}
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(
            **{k: ocp.args.StandardRestore(v) for k, v in items.items()}))
        restored = {k: restored[k] for k in items}
    except Exception as e:  # orbax raises many exception types for damaged or mismatched trees
        raise DamagedCheckpointError(f"cannot restore checkpoint step {step} from {where}: "
                                     f"{io.error_summary(e)}{hint}") from None
    for name, tree in restored.items():
        try:
            io.check_digest(tree, digests.get(name), f"checkpoint step {step} ({where}, {name})")
        except ValueError as e:
            raise DamagedCheckpointError(f"{e}{hint}") from None
    back = {v: k for k, v in names.items()}
    return {k: renamed(v, back) for k, v in restored.items()}


class RunCheckpoints:
    """The checkpoint steps of one training ``workdir``, as the training loop uses them.

    Every process calls every method (orbax writes from all of them together); digests are
    recorded by process 0. Use as a context manager: an open manager's threads print
    tracebacks at interpreter exit.
    """

    def __init__(self, workdir, keep: int = 3):
        self.workdir = os.path.abspath(os.fspath(workdir))
        self._mgr = manager(self.workdir, keep=keep)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._mgr.close()

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, params, opt_state):
        """Writes step ``step`` (replacing one of that number) and records its digests."""
        import orbax.checkpoint as ocp

        self._mgr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                     opt_state=ocp.args.StandardSave(opt_state)), force=True)
        self._mgr.wait_until_finished()
        if jax.process_index() == 0:
            record_digest(self.workdir, step, sharding.to_host({"params": params, "opt_state": opt_state}))

    def restore(self, step: int, abstract: dict) -> dict:
        """``{"params", "opt_state"}`` of ``step``, checked (see :func:`restore_step`)."""
        return restore_step(self._mgr, self.workdir, int(step), abstract)

    def delete_after(self, step: int) -> list[int]:
        """Deletes every step after ``step`` (a resume from an earlier step); returns them."""
        later = [s for s in self._mgr.all_steps() if s > step]
        if later:
            sharding.barrier("meta.checkpoint: resume step restored")
            for s in later:
                self._mgr.delete(s)
        return later


# ----------------------------------------------------------------------------- exports and loading
def export(path, meta: MetaModel, params, extra: dict | None = None, overwrite: bool = False) -> str:
    """Writes shared parameters to a standalone folder (``meta.json`` + ``params/``), atomically."""
    params = jax.device_get(params)
    with io.atomic_dir(path, overwrite=overwrite) as tmp:
        write_meta_json(tmp, meta, {**(extra or {}), "params_sha256": io.params_digest(params),
                                    "params_files": io.FILES_DIGEST})
        io.save_tree(os.path.join(tmp, "params"), params)
    return os.path.abspath(os.fspath(path))


def load(path, step: int | None = None):
    """``(meta, params)`` from a training workdir (latest or given ``step``) or a folder
    written by :func:`export`.

    Raises ``ValueError`` naming the problem for a missing, foreign or corrupt checkpoint.
    """
    path = os.fspath(path)
    body = read_meta_json(path)
    try:
        meta = MetaModel.from_config(body["meta"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}/{META_JSON} holds an invalid meta config: {e}") from None
    target = abstract_params(meta)
    if os.path.isdir(os.path.join(path, "params")):  # exported
        names, _ = saved_names(os.path.join(path, "params"), target)
        params = io.restore_tree(os.path.join(path, "params"), renamed(target, names),
                                 require_files=bool(body.get("params_files")))
        io.check_digest(params, body.get("params_sha256"), f"exported checkpoint {path}")
        return meta, renamed(params, {v: k for k, v in names.items()})
    mgr = manager(path, create=False) if os.path.isdir(os.path.join(path, CHECKPOINTS)) else None
    step = mgr.latest_step() if (mgr is not None and step is None) else step
    if mgr is None or step is None:
        raise ValueError(f"{path} has no saved parameters (neither params/ nor a step under {CHECKPOINTS}/)")
    try:
        return meta, restore_step(mgr, os.path.abspath(path), int(step), {"params": target})["params"]
    finally:
        mgr.close()
