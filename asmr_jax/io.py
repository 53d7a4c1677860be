"""Checkpoints (orbax) and atomic file writes.

A model checkpoint is a directory::

    CKPT/model.json    {"format": "asmr-jax-model", "version": 1, "model": model.config(), ...}
    CKPT/params/       orbax StandardCheckpointer tree of the parameters

Everything is first written to a temporary sibling and renamed into place, so an
interrupted or failed write never leaves a half-written checkpoint or output folder,
and never touches what was there before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import jax
import numpy as np

from asmr_jax import models

FORMAT = "asmr-jax-model"
VERSION = 1


def atomic_write(path, data, overwrite: bool = True) -> str:
    """Writes ``path`` atomically; the one writer every file of this project goes through.

    ``data`` is ``bytes``, ``str``, or ``write(f)`` filling a binary file object. It goes to
    a unique temporary file in the same folder (a new file's usual permissions), flushed
    and fsynced, then ``os.replace``-d into place (with ``overwrite=False``, hard-linked,
    which refuses a file that appeared meanwhile), then the folder is fsynced. A crash or
    an error leaves the old file or nothing, never a partial one. Returns the path.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; expected a file path")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it") \
                    from None
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def write_json(path, obj, indent: int = 2) -> str:
    """``obj`` as JSON at ``path``, atomically (:func:`atomic_write`)."""
    return atomic_write(path, json.dumps(obj, indent=indent))


def _libc_function(name: str):
    """``name`` from the C library on Linux, or ``None`` where there is none."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None


def exchange(a: str, b: str) -> bool:
    """Atomically swaps the paths ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns ``False`` (nothing changed) where the system or file system cannot do it.
    """
    renameat2 = _libc_function("renameat2")
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def release_free_heap() -> bool:
    """Hands the heap pages that are free but still mapped back to the system (glibc
    ``malloc_trim``); ``False`` where the C library has no such call.

    Compiling a large XLA program frees most of what the compiler allocated, but glibc keeps
    those pages mapped, so the process's resident memory stays at the compiler's peak and the
    step's buffers come on top. Called between compiling and running a step, it lowers the
    process peak (measured: the default-size ASMR-functa step, experiments/README.md).
    """
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False):
    """Yields a temporary directory that replaces ``path`` only if the block succeeds.

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false. On error
    the temporary directory is removed and ``path`` is left exactly as it was. An
    existing ``path`` is swapped with the new folder in one step (:func:`exchange`), so
    there is no moment at which it does not exist; where the system cannot swap, it is
    renamed aside first and the new folder renamed in.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path) and exchange(tmp, path):
        old = tmp  # now holds what was at path
    elif os.path.exists(path):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
        os.rmdir(old)
        os.rename(path, old)
        os.rename(tmp, path)
    else:
        os.rename(tmp, path)
    if old is not None:
        if os.path.isdir(old):
            shutil.rmtree(old, ignore_errors=True)
        else:  # the replaced target was a file
            os.remove(old)


def params_digest(params, config=None) -> str:
    """SHA-256 (hex) of every parameter array with its tree path, dtype and shape, and of
    ``config`` (a model with ``config()``, or anything JSON-able) when given.

    Saved next to parameters and checked on every load, so a damaged file or a foreign
    network is refused instead of silently used.
    """
    import dataclasses
    import hashlib

    h = hashlib.sha256()
    if config is not None:
        if hasattr(config, "config") and callable(config.config):
            config = config.config()
        elif dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = dataclasses.asdict(config)
        h.update(json.dumps(config, sort_keys=True, default=repr).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        arr = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def check_digest(params, want: str | None, where: str):
    """Raises ``ValueError`` naming ``where`` unless ``params`` hash to ``want`` (``None``: not recorded)."""
    if want is not None and params_digest(params) != want:
        raise ValueError(f"{where} is damaged: its parameters do not match the digest recorded when it was "
                         f"saved (sha256 {want[:16]}...); restore it from a copy or refit")


def _write_model(directory, model, params, extra: dict | None = None):
    params = jax.device_get(params)
    record = {"format": FORMAT, "version": VERSION, "model": model.config(), "params_sha256": params_digest(params),
              "params_files": FILES_DIGEST, **(extra or {})}
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(record, f, indent=2)
    save_tree(os.path.join(directory, "params"), params)


FILES_DIGEST = "asmr_files.sha256.json"


def files_digest(folder) -> dict:
    """``{relative path: sha256 hex}`` of every file under ``folder`` (the digest file itself aside)."""
    import hashlib

    folder = os.path.abspath(os.fspath(folder))
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder)
            if rel == FILES_DIGEST:
                continue
            h = hashlib.sha256()
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[rel] = h.hexdigest()
    return dict(sorted(out.items()))


def check_files(folder, recorded: dict | None, what: str) -> None:
    """Raises ``ValueError`` naming ``what`` and the first file that is missing or differs from
    ``recorded`` (:func:`files_digest` at save time; ``None``: nothing recorded).

    Checked before orbax reads a byte: a restore of damaged data fails inside orbax's reader
    threads, which then print tracebacks long after the error was reported.
    """
    if not recorded:
        return
    now = files_digest(folder)
    missing = sorted(set(recorded) - set(now))
    changed = sorted(k for k in recorded if k in now and now[k] != recorded[k])
    if missing or changed:
        which = f"{changed[0]} differs from the file saved" if changed else f"{missing[0]} is missing"
        more = len(missing) + len(changed) - 1
        raise ValueError(f"{what} is damaged: {which}" + (f" (and {more} more)" if more else "")
                         + "; restore it from a copy or refit")


def save_tree(path, tree):
    """Writes a parameter pytree to the new folder ``path`` with orbax; returns once it is on disk.

    The folder also gets :data:`FILES_DIGEST`, the digests of orbax's files, which
    :func:`restore_tree` checks before reading them. The checkpointer is closed on every
    path, so no orbax thread outlives the call (an open one prints "Event loop is closed"
    tracebacks at interpreter exit).
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)
        ckptr.wait_until_finished()
    write_json(os.path.join(path, FILES_DIGEST), files_digest(path))


def recorded_files(folder, what: str) -> dict | None:
    """The :data:`FILES_DIGEST` saved in ``folder`` (``None`` for a folder saved without one)."""
    path = os.path.join(os.fspath(folder), FILES_DIGEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} is damaged: its file digests ({path}) cannot be read ({e})") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{what} is damaged: {path} holds no file digests")
    return recorded


def restore_tree(path, abstract, what: str | None = None, require_files: bool = False):
    """Restores the pytree saved by :func:`save_tree` at ``path`` into the shapes of ``abstract``.

    Raises ``ValueError`` naming ``what`` (default: the folder) for a damaged or foreign tree.
    ``require_files``: the folder must hold its :data:`FILES_DIGEST` (set where the record
    written beside it says it was saved with one; folders saved before it existed have none).
    """
    import orbax.checkpoint as ocp

    where = os.path.abspath(os.fspath(path))
    if not os.path.isdir(where):
        raise ValueError(f"cannot restore parameters from {what or where}: the folder is missing")
    try:
        recorded = recorded_files(where, what or where)
        if recorded is None and require_files:
            raise ValueError(f"{what or where} is damaged: {FILES_DIGEST} is missing; restore it from a copy or refit")
        check_files(where, recorded, what or where)
    except ValueError as e:
        raise ValueError(f"cannot restore parameters from {what or where}: {e}") from None
    mismatch = layout_mismatch(where, abstract)
    if mismatch:
        raise ValueError(f"cannot restore parameters from {what or where}: {mismatch}")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(where, abstract)
    except Exception as e:  # orbax raises many exception types for damaged or mismatched trees
        raise ValueError(f"cannot restore parameters from {what or where}: {error_summary(e)}") from None


def layout_mismatch(path, abstract) -> str | None:
    """Why the pytree saved at ``path`` cannot fill ``abstract`` (other leaves, shapes or dtypes),
    read from orbax's metadata alone; ``None`` if it fits or the metadata cannot be read (the
    restore then reports the damage).

    Checked before restoring: a restore into the wrong shapes fails inside orbax's reader
    threads, which then print "Event loop is closed" tracebacks long after the error.
    """
    import logging

    import orbax.checkpoint as ocp

    absl_log = logging.getLogger("absl")  # orbax logs unreadable metadata before raising; the restore says it once
    level = absl_log.level
    absl_log.setLevel(logging.CRITICAL)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            saved = ckptr.metadata(os.path.abspath(os.fspath(path))).item_metadata.tree
        saved = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
    except Exception:  # damaged metadata: left to the restore's own error
        return None
    finally:
        absl_log.setLevel(level)
    saved = {jax.tree_util.keystr(k): v for k, v in saved.items()}
    wanted = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    if saved.keys() != wanted.keys():
        extra, missing = sorted(saved.keys() - wanted.keys()), sorted(wanted.keys() - saved.keys())
        return (f"it holds another set of arrays (saved only: {extra[:4] or '-'}; "
                f"expected but absent: {missing[:4] or '-'})")
    for name, want in wanted.items():
        got = saved[name]
        if tuple(got.shape) != tuple(want.shape) or np.dtype(got.dtype) != np.dtype(want.dtype):
            return (f"it was saved by another network: {name} is {got.dtype}{list(got.shape)}, "
                    f"this network needs {np.dtype(want.dtype)}{list(want.shape)}")
    return None


def error_summary(e: BaseException) -> str:
    """``Type: first line`` of an exception, without the long TensorStore spec orbax appends."""
    msg = str(e).splitlines()[0] if str(e) else ""
    msg = msg.split(" See full TensorStore details")[0]
    return f"{type(e).__name__}: {msg[:300]}".rstrip(": ")


def save_model(path, model, params, extra: dict | None = None, overwrite: bool = False) -> str:
    """Saves ``model`` and ``params`` to the directory ``path`` (atomically). Returns the path."""
    with atomic_dir(path, overwrite=overwrite) as tmp:
        _write_model(tmp, model, params, extra)
    return os.path.abspath(os.fspath(path))


def read_model_json(path) -> dict:
    """Reads and validates ``CKPT/model.json``; errors say what is wrong with ``path``."""
    path = os.fspath(path)
    meta_path = os.path.join(path, "model.json")
    if not os.path.isdir(path) or not os.path.isfile(meta_path):
        raise ValueError(f"{path} is not an asmr-jax model checkpoint (no model.json inside)")
    return read_format_json(meta_path, FORMAT, VERSION, "an asmr-jax model file")


def read_format_json(path, fmt: str, version: int | tuple, what: str) -> dict:
    """Reads a JSON header whose ``format`` must be ``fmt`` and ``version`` be ``version``
    (or one of them, for a tuple of readable versions).

    Errors name the file and say whether it is unreadable, ``what`` it is not, or of
    another version.
    """
    try:
        with open(path) as f:
            body = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is corrupt: {e}") from None
    if not isinstance(body, dict) or body.get("format") != fmt:
        got = body.get("format") if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"{path} is not {what} (format {got!r}, expected {fmt!r})")
    readable = version if isinstance(version, tuple) else (version,)
    if body.get("version") not in readable:
        raise ValueError(f"{path} has version {body.get('version')}, this library reads version "
                         f"{' or '.join(map(str, readable))}")
    return body


def load_model(path):
    """Loads ``(model, params, record)`` saved by :func:`save_model` (``record``: ``model.json``)."""
    record = read_model_json(path)
    model = models.from_config(record["model"])
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    params = restore_tree(os.path.join(path, "params"), abstract, f"{path}/params",
                          require_files=bool(record.get("params_files")))
    check_digest(params, record.get("params_sha256"), f"checkpoint {path}")
    return model, params, record
