"""The chunked on-disk store of fitted networks (written by :func:`asmr_jax.batch.fit_dataset`).

Chunked store (:func:`fit_dataset`, :func:`load_store`). A dataset (any object with
``__len__`` and ``get(indices) -> float32 [m, *shape, C]``, e.g.
:func:`asmr_jax.datasets.load_dataset`) is fitted ``chunk`` signals at a time and each
finished chunk is appended to a directory::

    OUT/store.json        {"format": "asmr-jax-batch-store", "version": 1,
                           "model": model.config(), "chunk": 64, "total": N,
                           "fit": {"steps", "lr", "cosine", "seed", "target_psnr", "init"},
                           "dataset": {...}, "leaves": [{"path": "layers/0/w", "shape": [..]}],
                           "chunks": [{"file": "chunk_00000.npz", "start": 0, "count": 64,
                                       "sha256": "..."}, ...],
                           "complete": true}
    OUT/chunk_00000.npz   signals [0, 64)
    OUT/chunk_00001.npz   signals [64, 128) ...

A chunk file is an uncompressed ``.npz`` (readable with ``numpy.load`` alone, no pickle):
``indices`` int64 ``[m]`` (dataset indices), ``psnr`` float32 ``[m]`` (final full-render
PSNR, dB), ``steps`` int32 ``[m]`` (updates applied), ``leaf_paths`` (unicode ``[L]``, the
parameter leaves in ``jax.tree`` order) and one array ``params/<path>`` of shape
``[m, *leaf_shape]`` per leaf. Chunks are written to a temporary name and renamed into
place, then ``store.json`` (also written by rename) records the chunk's sha256; the zip
entries carry a fixed timestamp, so refitting a chunk with the same settings on the same
machine and device count gives the same bytes. A resumed run (``resume=True``) checks every recorded chunk's checksum,
refuses a different model config, chunk size, count or fit setting, never rewrites a
recorded chunk and continues at the first unrecorded one (a chunk renamed into place
whose ``store.json`` entry was never written is fitted again). A checksum mismatch or an
unreadable chunk raises :class:`CorruptChunkError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile

import jax
import numpy as np

from asmr_jax import io, models, sharding

FORMAT = "asmr-jax-batch-store"
VERSION = 1
STORE_JSON = "store.json"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class CorruptChunkError(ValueError):
    """A stored chunk is missing, unreadable, or does not match its recorded checksum."""


# ----------------------------------------------------------------------------- pytree helpers
def leaf_path(path) -> str:
    """A ``jax.tree`` key path as ``"layers/0/w"``."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def param_leaves(model) -> list[tuple[str, tuple[int, ...]]]:
    """``[(path, shape)]`` of one network's parameters, in ``jax.tree`` order."""
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    return [(leaf_path(p), tuple(x.shape)) for p, x in jax.tree_util.tree_leaves_with_path(abstract)]


# ----------------------------------------------------------------------------- store files
def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_npz(path, arrays: dict):
    """Writes an uncompressed ``.npz`` with fixed zip timestamps (same arrays, same bytes), atomically."""

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, arr in arrays.items():
                with zf.open(zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME), "w", force_zip64=True) as g:
                    np.lib.format.write_array(g, np.ascontiguousarray(arr), allow_pickle=False)

    io.atomic_write(path, write)


def chunk_name(c: int) -> str:
    return f"chunk_{c:05d}.npz"


def _read_manifest(out_dir) -> dict:
    path = os.path.join(out_dir, STORE_JSON)
    if not os.path.isfile(path):
        raise ValueError(f"{out_dir} is not a batch store (no {STORE_JSON} inside)")
    return io.read_format_json(path, FORMAT, VERSION, "a batch store manifest")


def _verify_chunk(out_dir, entry: dict):
    path = os.path.join(out_dir, entry["file"])
    if not os.path.isfile(path):
        raise CorruptChunkError(f"{path} is recorded as finished in {STORE_JSON} but is missing")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise CorruptChunkError(
            f"{path} is corrupt: sha256 {digest[:16]}... does not match {entry['sha256'][:16]}... "
            f"recorded in {STORE_JSON}; delete the file and its entry in {STORE_JSON} (or the whole store) "
            "to fit it again"
        )


def _load_chunk(out_dir, entry: dict, leaves) -> dict:
    _verify_chunk(out_dir, entry)
    path = os.path.join(out_dir, entry["file"])
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / format errors come in many types
        raise CorruptChunkError(f"{path} is unreadable: {type(e).__name__}: {e}") from None
    count = entry["count"]
    for p, shape in leaves:
        name = f"params/{p}"
        if name not in out or out[name].shape != (count, *shape):
            got = out[name].shape if name in out else "missing"
            raise CorruptChunkError(f"{path}: {name} is {got}, expected {(count, *shape)}")
    return out


def fit_record(steps, lr, cosine, seed, target_psnr, init) -> dict:
    """The fit settings a store records (a resume must repeat them); ``init`` by its sha256."""
    digest = None
    if init is not None:
        h = hashlib.sha256()
        for path, x in jax.tree_util.tree_leaves_with_path(init):
            h.update(leaf_path(path).encode())
            h.update(np.ascontiguousarray(np.asarray(x, np.float32)).tobytes())
        digest = h.hexdigest()
    return {"steps": int(steps), "lr": float(lr), "cosine": bool(cosine), "seed": int(seed),
            "target_psnr": None if target_psnr is None else float(target_psnr), "init": digest}


def _dataset_info(dataset) -> dict:
    info = {}
    for attr in ("name", "split", "shape", "channels"):
        v = getattr(dataset, attr, None)
        if isinstance(v, (str, int)) or (isinstance(v, tuple) and all(isinstance(s, int) for s in v)):
            info[attr] = list(v) if isinstance(v, tuple) else v
    return info


def open_store(out_dir, model, dataset, chunk: int, total: int, fit: dict, resume: bool, writer: bool) -> dict:
    """Creates the store of ``total`` signals of ``dataset`` fitted by ``model`` with settings
    ``fit`` in chunks of ``chunk``, or validates an existing one for resuming (same model,
    chunking, total, settings and leaves); returns its manifest. Only the ``writer`` writes."""
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.config(),
        "chunk": int(chunk),
        "total": int(total),
        "fit": fit,
        "dataset": _dataset_info(dataset),
        "leaves": [{"path": p, "shape": list(s)} for p, s in param_leaves(model)],
    }
    header = json.loads(json.dumps(header))  # compare as stored: tuples become lists
    manifest_path = os.path.join(out_dir, STORE_JSON)
    if os.path.exists(manifest_path):
        if not resume:
            raise FileExistsError(
                f"{out_dir} already holds a batch store; pass resume=True (--resume) to "
                "continue it, or choose another output directory"
            )
        manifest = _read_manifest(out_dir)
        for field in ("model", "chunk", "total", "fit", "leaves"):
            if manifest.get(field) != header[field]:
                raise ValueError(
                    f"cannot resume {out_dir}: it was made with {field} = "
                    f"{json.dumps(manifest.get(field))}, this run has {json.dumps(header[field])}; "
                    "use the same settings or another output directory"
                )
        for entry in manifest["chunks"]:
            _verify_chunk(out_dir, entry)
        sharding.barrier("asmr_jax.batch: store checked")
        if writer:  # leftovers of a write interrupted before its rename
            for name in os.listdir(out_dir):
                if name.startswith(".") and ".tmp-" in name:
                    os.remove(os.path.join(out_dir, name))
        return manifest
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and holds no {STORE_JSON}; choose another output directory"
        )
    manifest = {**header, "chunks": [], "complete": False}
    sharding.barrier("asmr_jax.batch: store checked")  # every process has looked before one writes
    if writer:
        os.makedirs(out_dir, exist_ok=True)
        io.write_json(manifest_path, manifest, indent=1)
    return manifest


def write_chunk(out_dir, manifest: dict, c: int, indices, psnr, steps, params) -> None:
    """Writes chunk ``c`` (signals ``indices``, their final PSNR, applied steps and stacked
    ``params``, named by the manifest's leaves), then records it in the manifest (with its
    sha256) and rewrites ``store.json``: a chunk is finished once it is listed."""
    paths = [leaf["path"] for leaf in manifest["leaves"]]
    arrays = {
        "indices": np.asarray(indices, np.int64),
        "psnr": np.asarray(psnr, np.float32),
        "steps": np.asarray(steps, np.int32),
        "leaf_paths": np.array(paths),
    }
    for p, leaf in zip(paths, jax.tree.leaves(params)):
        arrays[f"params/{p}"] = np.asarray(leaf, np.float32)
    path = os.path.join(out_dir, chunk_name(c))
    _write_npz(path, arrays)
    manifest["chunks"].append(
        {"file": chunk_name(c), "start": int(arrays["indices"][0]), "count": len(arrays["indices"]),
         "sha256": _sha256(path)}
    )
    manifest["chunks"].sort(key=lambda e: e["start"])
    manifest["complete"] = len(manifest["chunks"]) == -(-manifest["total"] // manifest["chunk"])
    io.write_json(os.path.join(out_dir, STORE_JSON), manifest, indent=1)


# ----------------------------------------------------------------------------- loading
class Store:
    """A (possibly partial) batch store on disk; see the module docstring.

    ``len(store)`` counts fitted signals; ``store.params(i)`` is the pytree of the network
    fitted to dataset signal ``i``; ``store.render(i)`` its reconstruction
    ``[*shape, C]``. Chunks are read lazily and checked against their sha256 on first use.
    """

    def __init__(self, out_dir):
        self.path = os.path.abspath(os.fspath(out_dir))
        self.meta = _read_manifest(self.path)
        self.model = models.from_config(self.meta["model"])
        self.chunk = int(self.meta["chunk"])
        self.total = int(self.meta["total"])
        self._entries = {e["start"] // self.chunk: e for e in self.meta["chunks"]}
        self._leaves = [(leaf["path"], tuple(leaf["shape"])) for leaf in self.meta["leaves"]]
        self._treedef = jax.tree.structure(jax.eval_shape(self.model.init, jax.random.key(0)))
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return sum(e["count"] for e in self._entries.values())

    def __repr__(self) -> str:
        return f"Store({self.path!r}, {self.model.kind}, {len(self)}/{self.total} signals)"

    @property
    def complete(self) -> bool:
        return len(self) == self.total

    def _chunk(self, c: int) -> dict:
        if c not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[c] = _load_chunk(self.path, self._entries[c], self._leaves)
        return self._cache[c]

    def _locate(self, i: int) -> tuple[dict, int]:
        i = int(i)
        if not 0 <= i < self.total:
            raise IndexError(f"signal {i} is out of range: the store holds indices 0..{self.total - 1}")
        c = i // self.chunk
        if c not in self._entries:
            raise IndexError(
                f"signal {i} is not fitted yet ({len(self)} of {self.total} signals are stored); "
                "resume the fit to finish the store"
            )
        return self._chunk(c), i - c * self.chunk

    def params(self, i: int):
        """The parameter pytree of the network fitted to signal ``i``."""
        z, row = self._locate(i)
        return jax.tree.unflatten(self._treedef, [z[f"params/{p}"][row] for p, _ in self._leaves])

    def psnr(self, i: int) -> float:
        z, row = self._locate(i)
        return float(z["psnr"][row])

    def steps(self, i: int) -> int:
        z, row = self._locate(i)
        return int(z["steps"][row])

    def render(self, i: int) -> np.ndarray:
        """The reconstruction ``[*shape, C]`` of signal ``i``."""
        return np.asarray(_render(self.model, self.params(i)))

    def arrays(self) -> dict:
        """``indices``, ``psnr`` and ``steps`` of every fitted signal, in index order."""
        cs = sorted(self._entries)
        out = {k: [self._chunk(c)[k] for c in cs] for k in ("indices", "psnr", "steps")}
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}

    def verify(self):
        """Checks every finished chunk against its checksum; raises :class:`CorruptChunkError`."""
        for e in self._entries.values():
            _verify_chunk(self.path, e)


@functools.partial(jax.jit, static_argnames=("model",))
def _render(model, params):
    return model.render(params)


def load_store(out_dir) -> Store:
    """Opens a store written by :func:`fit_dataset`."""
    return Store(out_dir)
