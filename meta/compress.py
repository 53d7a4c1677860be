"""COIN++-style compression of functa latents: quantize, entropy-code, write a file.

An image is compressed to one latent vector ``phi`` (``[D]``) of a meta-learned
network (``meta.functa``), then:

1. **Quantizer** (:class:`meta.quantize.Quantizer`): uniform, ``2**bits`` cells per coordinate on
   ``[center - clip * scale, center + clip * scale]``. By default (``mode="pca"``) the
   coordinates are the latent's principal components on the training functaset
   (``y = (z - mean) @ basis``), every one with the same cell width, set by the widest
   component's std; zero is a cell midpoint, so a component far narrower than a cell
   costs almost nothing. ``mode="dim"``/``"global"`` quantize the latent itself with the
   per-dimension (or global) mean/std. A value is mapped to the index of its cell, and
   back to the cell's midpoint, so inside the clip range ``|y - dequantize(quantize(y))|
   <= step / 2`` per coordinate, with ``step = 2 * clip * scale / 2**bits``.
2. **Symbol model** (:class:`meta.entropy.SymbolModel`): a categorical distribution over the
   ``2**bits`` symbols, per dimension or shared by all dimensions, estimated from the
   quantized training latents. Counts are smoothed towards the shared histogram and
   that towards a discretized standard normal; the smoothing strengths are picked by
   the code length on a held-out fifth of the training latents, so every symbol keeps a
   nonzero probability and stays codable.
3. **Entropy coder**: ``constriction``'s range coder with that model; the payload is
   the coder's 32-bit words, big-endian, with up to 3 trailing zero bytes dropped
   (restored exactly on decode).
4. **File**: :mod:`meta.container` (one signal per file, or many in one container whose
   payload is a single range-coded stream).

The quantizer + symbol model (a :class:`Codec`) is fitted once on a training
functaset (``asmr codec-fit``) and saved as ``.npz``; encoder and decoder load the same
file, so the probability tables are bit-identical on both sides.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import struct
import zipfile
import zlib

import numpy as np

from asmr_jax import io
from meta import checkpoint, container
from meta.entropy import SymbolModel, fit_symbol_model
from meta.quantize import Quantizer, check_bits, fit_quantizer
from meta.refine import refine

CODEC_FORMAT = "asmr-functa-codec"
CODEC_VERSION = 2  # 2 added the rotation (mean, basis); version-1 files still load
READABLE_VERSIONS = (1, 2)


# ----------------------------------------------------------------------------- codec
@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
    """A quantizer, its symbol model, and the model id of the network it was fitted for."""

    quantizer: Quantizer
    symbols: SymbolModel
    model_id: bytes

    def __post_init__(self):
        if self.symbols.levels != self.quantizer.levels:
            raise ValueError(f"symbol model has {self.symbols.levels} symbols, quantizer "
                             f"{self.quantizer.levels}")
        if not self.symbols.shared and self.symbols.probs.shape[0] != self.quantizer.dim:
            raise ValueError("per-dimension symbol tables do not match the latent dimension")

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    @property
    def dim(self) -> int:
        return self.quantizer.dim

    @functools.cached_property
    def codec_id(self) -> bytes:
        """4-byte sha256 prefix of every table the decoder depends on (hashed once: a codec's
        tables are not changed after it is made; a PCA basis at D = 1024 is 4 MB)."""
        h = hashlib.sha256()
        q = self.quantizer
        h.update(struct.pack(">Bd", q.bits, q.clip))
        rotation = () if q.basis is None else (q.mean, q.basis)  # absent: the version-1 id, unchanged
        for arr in (q.center, q.scale, self.symbols.probs, *rotation):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr, "<f4").tobytes())
        return h.digest()[:4]

    def encode_latent(self, latent) -> tuple[bytes, np.ndarray]:
        """``[D]`` latent (or ``[n, D]``, one stream) -> (payload bytes, int32 symbols of that shape)."""
        symbols = self.quantizer.quantize(np.asarray(latent, np.float32))
        return self.symbols.encode(symbols), symbols

    def decode_latent(self, payload: bytes, count: int | None = None) -> np.ndarray:
        """Payload -> ``[D]`` (or ``[count, D]``) float32 dequantized latents."""
        return self.quantizer.dequantize(self.symbols.decode(payload, self.dim, count))

    def save(self, path, overwrite: bool = False) -> str:
        """Writes the codec as ``.npz`` atomically; returns the path."""
        q = self.quantizer
        header = json.dumps({"format": CODEC_FORMAT, "version": CODEC_VERSION})

        def write(f):
            rotation = {} if q.basis is None else {"mean": q.mean, "basis": q.basis}
            np.savez(f, meta=np.array(header), bits=np.int64(q.bits), clip=np.float64(q.clip), center=q.center,
                     scale=q.scale, probs=self.symbols.probs, model_id=np.frombuffer(self.model_id, np.uint8),
                     **rotation)

        return io.atomic_write(path, write, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> Codec:
        """Reads a codec written by :meth:`save`; raises ``ValueError`` if it is not one."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"codec file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in ("bits", "clip", "center", "scale", "probs", "model_id")}
                rotation = [z[k] for k in ("mean", "basis") if k in z.files]
        except (OSError, ValueError, KeyError, zlib.error, EOFError, AttributeError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a readable codec file (truncated or damaged?): "
                             f"{type(e).__name__}: {e}") from None
        if (not isinstance(header, dict) or header.get("format") != CODEC_FORMAT
                or header.get("version") not in READABLE_VERSIONS):
            raise ValueError(f"{path} is not a {CODEC_FORMAT} file of version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))} ({header})")
        if len(rotation) == 1 or (rotation and header["version"] < 2):
            raise ValueError(f"{path}: a version-{header['version']} codec with {len(rotation)} of the 2 rotation "
                             "arrays (mean, basis) is damaged")
        try:
            q = Quantizer(int(arrays["bits"]), arrays["center"], arrays["scale"], float(arrays["clip"]), *rotation)
        except ValueError as e:
            raise ValueError(f"{path}: damaged codec tables: {e}") from None
        return cls(q, SymbolModel(arrays["probs"]), bytes(arrays["model_id"].astype(np.uint8)))


def fit_codec(latents, bits: int, model_id: bytes, clip: float = 3.0, mode: str = "pca",
              per_dim_symbols: bool | None = None) -> Codec:
    """Fits quantizer (:func:`fit_quantizer`'s ``mode``) and symbol model on training latents ``[n, D]``."""
    q = fit_quantizer(latents, bits, clip=clip, mode=mode)
    sym = fit_symbol_model(q.quantize(np.asarray(latents, np.float32)), q.levels, clip=clip,
                           per_dim=per_dim_symbols)
    return Codec(q, sym, bytes(model_id))


# ----------------------------------------------------------------------------- identity
def model_id(params, config=None) -> bytes:
    """8-byte prefix of :func:`asmr_jax.io.params_digest` of a network's config and parameters:
    a different architecture or different weights give a different id. The digest is taken
    over the parameter names of checkpoint version 2, so that the ids of files written
    before the rename stay valid."""
    from asmr_jax.io import params_digest

    return bytes.fromhex(params_digest(checkpoint.renamed(params, checkpoint.VERSION_2_NAMES), config))[:8]


# ----------------------------------------------------------------------------- encode / decode
@dataclasses.dataclass
class Encoded:
    """Result of :func:`encode`: file bytes plus what was measured on the way.

    Arrays have a leading signal axis ``n`` (1 for a single-signal file).
    """

    data: bytes
    symbols: np.ndarray  # [n, D] int32
    latents: np.ndarray  # [n, D] float32, the dequantized latents the decoder will see
    images: np.ndarray  # [n, *shape, C] reconstructions from ``latents``
    psnr: np.ndarray  # [n] PSNR of ``images`` against the inputs
    psnr_unquantized: np.ndarray  # [n] PSNR before quantization
    bpp: float  # file bits per pixel (header included), over all signals
    payload_bpp: float  # payload bits per pixel


def check_image(image, shape, channels) -> np.ndarray:
    """Returns ``image`` as float32 ``[*shape, channels]`` on [0, 1]; ``ValueError`` otherwise."""
    image = np.asarray(image)
    want = tuple(shape) + (channels,)
    if image.shape != want:
        raise ValueError(f"image has shape {image.shape}, but the model takes {'x'.join(map(str, want))} "
                         "(resize or crop it first)")
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise ValueError("image values must be finite and on [0, 1]")
    return image


def _check_ids(codec: Codec, model_id_: bytes):
    if bytes(model_id_) != codec.model_id:
        raise ValueError(f"codec was fitted for network {codec.model_id.hex()}, this network is "
                         f"{bytes(model_id_).hex()}; refit it with `asmr codec-fit`")


def psnr_each(pred, target) -> np.ndarray:
    """``[n]`` PSNR in dB of ``pred`` (clipped to [0, 1]) against ``target``, both ``[n, ...]``."""
    from asmr_jax import metrics

    return np.array([metrics.psnr(np.clip(p, 0, 1), t) for p, t in zip(np.asarray(pred), np.asarray(target))])


def encode(images, codec: Codec, model_id_: bytes, fit, render, *, many: bool = False, refine_steps: int = 0,
           refine_lr: float = 0.1, render_jax=None, rate_weight: float = 0.0) -> Encoded:
    """Compresses one signal (a single-signal file) or, with ``many``, several into one container.

    ``images``: one ``[*shape, C]`` signal on [0, 1], or ``[n, *shape, C]`` with ``many``;
    ``fit(images [n, ...]) -> [n, D]`` latents; ``render(latents [n, D]) -> [n, *shape, C]``;
    ``render_jax``: a differentiable JAX ``render`` of latents ``[n, D]`` for the
    refinement, which minimizes distortion plus ``rate_weight`` times the code length in
    bits per pixel (:func:`refine`). ``model_id_`` must be the id the codec was fitted for (the network's
    :func:`model_id`). File formats: :mod:`meta.container`.
    """
    _check_ids(codec, model_id_)
    images = np.asarray(images, np.float32)
    batch = images if many else images[None]
    if not len(batch):
        raise ValueError("nothing to encode: no signals given")
    latents = np.asarray(fit(batch), np.float32)
    if latents.shape != (len(batch), codec.dim):
        raise ValueError(f"the network's latents are {latents.shape[1:]}, the codec expects [{codec.dim}]")
    psnr_float = psnr_each(render(latents), batch)
    if int(refine_steps) < 0:
        raise ValueError(f"refine steps must be >= 0 (0: no refinement), got {refine_steps}")
    if refine_steps:
        if render_jax is None:
            raise ValueError("refinement needs render_jax, a differentiable render of latents [n, D]")
        latents = refine(latents, batch, render_jax, codec.quantizer, refine_steps, refine_lr, codec.symbols,
                         rate_weight)
    payload, symbols = codec.encode_latent(latents if many else latents[0])
    mid, cid = container.short_ids(model_id_, codec.codec_id)
    data = container.pack(container.Stream(mid, cid, len(batch) if many else None, payload))
    deq = codec.quantizer.dequantize(symbols.reshape(len(batch), -1))
    recon = np.asarray(render(deq))
    pixels = len(batch) * int(np.prod(batch.shape[1:-1]))
    return Encoded(data, symbols.reshape(len(batch), -1), deq, recon, psnr_each(recon, batch), psnr_float,
                   8 * len(data) / pixels, 8 * len(payload) / pixels)


def check_model(stream: container.Stream, model_id_: bytes, name: str = "input", model: str = "the given model"):
    """Raises ``ValueError`` unless ``stream`` was written for the network ``model_id_``."""
    mid, _ = container.short_ids(model_id_, b"")
    if stream.model_id != mid:
        raise ValueError(f"{name} was encoded with network {stream.model_id.hex()}..., but {model} is "
                         f"{mid.hex()}...; decode it with the checkpoint it was encoded with")


def check_stream(stream: container.Stream, codec: Codec, model_id_: bytes, name: str = "input"):
    """Raises ``ValueError`` unless ``stream`` was written with this network and codec."""
    check_model(stream, model_id_, name)
    _, cid = container.short_ids(model_id_, codec.codec_id)
    if stream.codec_id != cid:
        raise ValueError(f"{name} was encoded with codec {stream.codec_id.hex()}..., the codec found is "
                         f"{cid.hex()}... ({codec.bits} bits)")


def decode(data: bytes, codec: Codec, model_id_: bytes, render, name: str = "input"):
    """Decompresses file bytes -> ``(images, latents, stream)``.

    ``render(latents [n, D]) -> [n, *shape, C]``. For a single-signal file ``images`` is
    ``[*shape, C]`` and ``latents`` ``[D]``; for a container ``[n, *shape, C]`` and
    ``[n, D]``. Raises ``ValueError`` for a truncated or corrupt file, or one written for
    another network or codec.
    """
    stream = container.unpack(data, name)
    check_stream(stream, codec, model_id_, name)
    try:
        latents = codec.decode_latent(stream.payload, stream.count)
    except (ValueError, RuntimeError) as e:  # a payload that is not a stream of this codec
        raise ValueError(f"{name}: the payload does not decode with codec {codec.codec_id.hex()}: {e}") from None
    images = np.asarray(render(latents if stream.count else latents[None]))
    return (images if stream.count else images[0]), latents, stream


# ----------------------------------------------------------------------------- meta-learned networks
class MetaNetwork:
    """A meta-learned checkpoint (``meta.functa``) seen as ``fit``/``render`` functions.

    ``fit(images [n, H, W, C]) -> [n, D]`` runs ``steps`` inner steps (default the
    checkpoint's ``k``); ``render(latents [n, D]) -> [n, H, W, C]`` (numpy, clipped to
    [0, 1]); ``render_jax`` renders latents ``[*batch, D]`` (or one ``[D]``), traceable and
    differentiable, through the network's batched render.
    ``id`` is :func:`model_id` of the shared parameters and the meta config.
    """

    def __init__(self, path, steps: int | None = None):
        self.path = os.fspath(path)
        self.meta, self.params = checkpoint.load(self.path)
        self.steps = self.meta.inner_steps if steps is None else int(steps)
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0 (inner steps to fit a latent), got {self.steps}")
        self.id = model_id(self.params, self.meta.config())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta.shape)

    @property
    def channels(self) -> int:
        return int(self.meta.channels)

    @property
    def dim(self) -> int:
        return int(self.meta.latent_dim)

    def fit(self, images) -> np.ndarray:
        """``[n, H, W, C]`` -> latents ``[n, D]``."""
        from meta import inference

        return inference.fit_latents(self.meta, self.params, images, self.steps)[0]

    def render(self, latents) -> np.ndarray:
        """``[n, D]`` -> ``[n, H, W, C]``."""
        from meta import inference

        return inference.render_latents(self.meta, self.params, latents)

    @functools.cached_property
    def render_jax(self):
        import jax.numpy as jnp

        from meta import functa

        meta, params = self.meta, self.params
        return lambda z: jnp.clip(functa.render(meta, params, z), 0.0, 1.0)


def codec_path(checkpoint, bits: int) -> str:
    """Default codec location: ``CHECKPOINT/codec/bits{bits}.npz``."""
    return os.path.join(os.fspath(checkpoint), "codec", f"bits{check_bits(bits)}.npz")


def find_codec(net: MetaNetwork, stream: container.Stream, name: str = "input") -> Codec:
    """The codec in ``CHECKPOINT/codec/`` whose id ``stream`` names; a clear error if none."""
    check_model(stream, net.id, name, net.path)
    folder = os.path.dirname(codec_path(net.path, 1))
    found = []
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if entry.endswith(".npz"):
            codec = Codec.load(os.path.join(folder, entry))
            found.append(f"{entry} ({codec.codec_id[:container.CODEC_ID_BYTES].hex()})")
            if codec.codec_id.startswith(stream.codec_id) and codec.model_id == net.id:
                return codec
    raise FileNotFoundError(f"{name} needs codec {stream.codec_id.hex()}..., not among the codecs in {folder}: "
                            f"{', '.join(found) or 'none'}; pass the codec file with --codec")


def load_codec_for(net: MetaNetwork, bits: int, path=None) -> Codec:
    """Loads the codec for ``net`` at ``bits`` (default :func:`codec_path`); clear errors if missing/stale."""
    path = path or codec_path(net.path, bits)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {bits}-bit codec at {path}; create it with "
                                f"`asmr codec-fit {net.path} --bits {bits} --functaset TRAIN.npz` "
                                f"(or --dataset NAME to fit latents of a training split)")
    codec = Codec.load(path)
    if codec.bits != bits:
        raise ValueError(f"codec {path} is for {codec.bits} bits, {bits} were asked for")
    if codec.model_id != net.id:
        raise ValueError(f"codec {path} was fitted for network {codec.model_id.hex()}, but {net.path} is now "
                         f"{net.id.hex()} (trained further?); refit it with `asmr codec-fit --overwrite`")
    if codec.dim != net.dim:
        raise ValueError(f"codec {path} has latent dim {codec.dim}, the network {net.dim}")
    return codec
