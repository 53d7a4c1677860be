"""One signal in and out: image files, scikit-image's bundled photos, WAV audio, video.

Every loader returns a :class:`Signal`: float32 ``[*spatial, channels]`` on ``[0, 1]``.
Audio is mapped from ``[-1, 1]`` to ``[0, 1]``; videos are ``[T, H, W, C]``.
"""

from __future__ import annotations

import dataclasses
import os
import wave

import numpy as np

# Bundled in scikit-image's wheel (no download); other skimage.data names fetch from
# the network and are refused.
BUNDLED_IMAGES = (
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "moon", "motorcycle_left", "motorcycle_right", "page", "retina", "rocket", "text",
)
ALIASES = {"cameraman": "camera", "motorcycle": "motorcycle_left", "hubble": "hubble_deep_field",
           "ihc": "immunohistochemistry"}
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXT = (".gif", ".npy")


@dataclasses.dataclass
class Signal:
    """A signal on ``[0, 1]``: ``data [*spatial, C]``, its ``kind`` and (audio) sample rate."""

    data: np.ndarray
    kind: str  # "image" | "audio" | "video"
    name: str = ""
    sample_rate: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:-1])

    @property
    def channels(self) -> int:
        return int(self.data.shape[-1])


def _to_unit(arr: np.ndarray, what: str) -> np.ndarray:
    """Integer or float pixels -> float32 on [0, 1]; rejects NaN/inf."""
    if np.issubdtype(arr.dtype, np.integer):
        hi = 1 if arr.dtype == bool else np.iinfo(arr.dtype).max
        if arr.dtype == np.int32 or arr.dtype == np.uint32:
            hi = 65535 if arr.max(initial=0) > 255 else 255  # PIL "I" mode holds 16-bit data
        return (arr.astype(np.float64) / hi).astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} has {int((~np.isfinite(arr)).sum())} NaN/inf values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{what} has float values in [{arr.min()}, {arr.max()}], expected [0, 1]")
    return arr


def _with_channels(arr: np.ndarray, spatial: int) -> np.ndarray:
    return arr[..., None] if arr.ndim == spatial else arr


def _check(signal: Signal) -> Signal:
    if signal.data.size == 0 or np.prod(signal.shape) < 2:
        raise ValueError(f"{signal.name or 'signal'} has shape {signal.data.shape}: need at least 2 samples")
    return signal


def bundled_image(name: str) -> Signal:
    """One of scikit-image's bundled photos by name, e.g. ``camera`` (alias ``cameraman``)."""
    import skimage.data

    key = ALIASES.get(name, name)
    if key not in BUNDLED_IMAGES:
        raise ValueError(f"unknown bundled image {name!r}; available offline: {', '.join(BUNDLED_IMAGES)}")
    if key.startswith("motorcycle_"):  # one stereo pair: (left, right, disparity)
        arr = np.asarray(skimage.data.stereo_motorcycle()[0 if key == "motorcycle_left" else 1])
    else:
        arr = np.asarray(getattr(skimage.data, key)())
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # logo, horse: drop alpha
    return _check(Signal(_with_channels(_to_unit(arr, name), 2), "image", name))


def load_image(path) -> Signal:
    """PNG/JPEG/... gray, RGB or RGBA (alpha dropped), 8 or 16 bit."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "CMYK", "YCbCr", "LA", "RGBA", "PA"):
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            arr = np.array(im)
            if im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255):
                arr = arr.astype(np.float64) / 65535.0
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return _check(Signal(_with_channels(_to_unit(arr, str(path)), 2), "image", os.path.basename(path)))


def load_wav(path) -> Signal:
    """8/16/32-bit PCM WAV, any channels, mapped from ``[-1, 1]`` to ``[0, 1]``."""
    try:
        with wave.open(os.fspath(path), "rb") as w:
            rate, nch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f"cannot read WAV {path}: {e}") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        dt = "<i2" if width == 2 else "<i4"
        x = np.frombuffer(raw, dt).astype(np.float32) / float(2 ** (8 * width - 1))
    else:
        raise ValueError(f"WAV {path} has {8 * width}-bit samples; supported: 8, 16, 32-bit PCM")
    x = x.reshape(-1, nch)
    data = np.clip((x + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    return _check(Signal(data, "audio", os.path.basename(path), sample_rate=rate))


def load_video(path) -> Signal:
    """A GIF, a ``.npy`` ``[T, H, W(, C)]`` array, or a folder of frame images (sorted)."""
    from PIL import Image, ImageSequence

    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXT))
        if not files:
            raise ValueError(f"folder {path} holds no frame images ({', '.join(IMAGE_EXT)})")
        frames = [load_image(os.path.join(path, f)).data for f in files]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"frames in {path} differ in shape: {sorted({f.shape for f in frames})}")
        data = np.stack(frames)
    elif path.lower().endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if arr.ndim not in (3, 4):
            raise ValueError(f"{path} holds an array of shape {arr.shape}; a video is [T, H, W] or [T, H, W, C]")
        data = _with_channels(_npy_to_unit(arr, path), 3)
    else:
        try:
            with Image.open(path) as im:
                data = np.stack([np.array(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
        except OSError as e:
            raise ValueError(f"cannot read video {path}: {e}") from None
        data = _to_unit(data, path)
    return _check(Signal(data.astype(np.float32), "video", os.path.basename(path.rstrip("/"))))


def bundled_video() -> Signal:
    """scikit-image's bundled ``no_time_for_that_tiny.gif``: 24 frames of 25x14 RGB."""
    import skimage

    path = os.path.join(os.path.dirname(skimage.__file__), "data", "no_time_for_that_tiny.gif")
    return load_video(path)


NPY_KINDS = ("image", "audio", "video")


def npy_kind(shape) -> str:
    """What a ``.npy`` array of ``shape`` holds, by one rule used everywhere:

    ``[T]`` audio; ``[H, W]`` a gray image; ``[H, W, C]`` with ``C`` in 1, 3, 4 an image;
    any other 3-D array ``[T, H, W]`` a gray video; ``[T, H, W, C]`` a video. ``kind=``
    (CLI ``--kind``) overrides it for arrays that read both ways.
    """
    nd = len(shape)
    if nd == 1:
        return "audio"
    if nd == 2 or (nd == 3 and shape[-1] in (1, 3, 4)):
        return "image"
    if nd in (3, 4):
        return "video"
    raise ValueError(f"a .npy signal has 1 to 4 axes ([T], [H, W(, C)], [T, H, W(, C)]), got shape {tuple(shape)}")


NPY_SCALE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535, np.dtype(bool): 1}


def _npy_to_unit(arr: np.ndarray, what: str) -> np.ndarray:
    """A ``.npy`` array -> float32 on ``[0, 1]``: floats as they are (they must lie in
    ``[0, 1]``), ``uint8 / 255``, ``uint16 / 65535``, ``bool`` as ``{0, 1}``; any other
    dtype is refused, since its range is not known."""
    if np.iscomplexobj(arr):
        raise ValueError(f"{what} holds a complex array ({arr.dtype}): complex arrays are not signals; "
                         f"save the real part or the magnitude")
    if arr.dtype in NPY_SCALE:
        return (arr.astype(np.float64) / NPY_SCALE[arr.dtype]).astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} holds {arr.dtype} values, whose range is unknown: save floats in [0, 1], "
                         f"uint8 (0..255), uint16 (0..65535) or bool")
    return _to_unit(arr, what)


def load_npy(path, kind: str | None = None) -> Signal:
    """A ``.npy`` signal, its kind from :func:`npy_kind` unless ``kind`` is given."""
    arr = np.load(path, allow_pickle=False, mmap_mode="r")
    kind = kind or npy_kind(arr.shape)
    if kind not in NPY_KINDS:
        raise ValueError(f"kind must be one of {NPY_KINDS}, got {kind!r}")
    if kind == "video":
        return load_video(path)
    arr = np.asarray(arr)
    if kind == "audio":
        if arr.ndim not in (1, 2):
            raise ValueError(f"{path} holds shape {arr.shape}; audio is [T] or [T, C]")
        data = _npy_to_unit(arr.reshape(arr.shape[0], -1), path)
    else:
        if arr.ndim not in (2, 3):
            raise ValueError(f"{path} holds shape {arr.shape}; an image is [H, W] or [H, W, C]")
        data = _with_channels(_npy_to_unit(arr, path), 2)
    rate = 16000 if kind == "audio" else None
    return _check(Signal(data.astype(np.float32), kind, os.path.basename(path), sample_rate=rate))


def load_signal(source, video: bool | None = None, kind: str | None = None) -> Signal:
    """Loads a signal from a path or a bundled name.

    ``source`` may be a bundled image name (``camera``, ``astronaut``, ...), ``"gif"``
    for the bundled clip, an image file, a ``.wav``, a ``.gif`` (a video; pass
    ``video=False`` to read its first frame as an image), a ``.npy`` array (its layout
    decides the kind, see :func:`npy_kind`; ``kind`` overrides), or a folder of frames.
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        if source in BUNDLED_IMAGES or source in ALIASES:
            return bundled_image(source)
        if source in ("gif", "no_time_for_that"):
            return bundled_video()
        raise ValueError(
            f"{source!r} is neither a file nor a bundled name; bundled: {', '.join(BUNDLED_IMAGES)}, gif"
        )
    low = source.lower()
    if low.endswith(".npy"):
        return load_npy(source, kind)
    if os.path.isdir(source) or (low.endswith(".gif") and video is not False):
        return load_video(source)
    if low.endswith(".wav"):
        return load_wav(source)
    if low.endswith(IMAGE_EXT) or low.endswith(".gif"):
        return load_image(source)
    raise ValueError(
        f"unsupported file {source!r}; expected an image ({', '.join(IMAGE_EXT)}), .wav, .gif, .npy or a folder"
    )


def crop(signal: Signal, size) -> Signal:
    """Center crop of the spatial axes to ``size`` (an int for every axis, or a tuple)."""
    size = (size,) * len(signal.shape) if isinstance(size, int) else tuple(size)
    if len(size) != len(signal.shape) or any(c < 1 or c > s for c, s in zip(size, signal.shape)):
        raise ValueError(f"cannot crop shape {signal.shape} to {size}")
    sl = tuple(slice((s - c) // 2, (s - c) // 2 + c) for s, c in zip(signal.shape, size))
    return dataclasses.replace(signal, data=signal.data[sl])


# ----------------------------------------------------------------------------- writers
def to_uint8(x) -> np.ndarray:
    return np.round(np.clip(np.asarray(x, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path, image, overwrite: bool = True):
    """Writes ``[H, W, C]`` on ``[0, 1]`` (C = 1, 3 or 4) as an 8-bit PNG, atomically (an existing
    file is kept, and ``FileExistsError`` raised, unless ``overwrite``)."""
    from PIL import Image

    from asmr_jax.io import atomic_write

    img = to_uint8(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    atomic_write(path, lambda f: Image.fromarray(img).save(f, format="PNG"), overwrite=overwrite)


def write_wav(path, audio, sample_rate: int = 16000):
    """Writes ``[T, C]`` on ``[0, 1]`` (mapped to [-1, 1]) as 16-bit PCM."""
    x = np.clip(np.asarray(audio, np.float32), 0.0, 1.0) * 2.0 - 1.0
    pcm = np.round(x * 32767).astype("<i2")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(pcm.shape[-1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def write_video(directory, video, fps: float = 10.0, name: str = "reconstruction"):
    """Writes ``[T, H, W, C]`` as ``{name}.gif`` plus ``{name}_frames/NNNN.png``."""
    from PIL import Image

    frames = to_uint8(video)
    if frames.shape[-1] == 1:
        frames = frames[..., 0]
    fdir = os.path.join(directory, f"{name}_frames")
    os.makedirs(fdir, exist_ok=True)
    pil = [Image.fromarray(f) for f in frames]
    for i, f in enumerate(pil):
        f.save(os.path.join(fdir, f"{i:04d}.png"))
    pil[0].save(
        os.path.join(directory, f"{name}.gif"), save_all=True, append_images=pil[1:],
        duration=int(1000 / fps), loop=0,
    )


def write_signal(directory, signal, kind: str, name: str = "reconstruction", sample_rate: int = 16000) -> str:
    """Writes a signal by kind (``image``/``audio``/``video``) into ``directory``; returns the file."""
    if kind == "image":
        path = os.path.join(directory, f"{name}.png")
        write_png(path, signal)
    elif kind == "audio":
        path = os.path.join(directory, f"{name}.wav")
        write_wav(path, signal, sample_rate)
    elif kind == "video":
        write_video(directory, signal, name=name)
        path = os.path.join(directory, f"{name}.gif")
    else:
        raise ValueError(f"unknown signal kind {kind!r}; expected image, audio or video")
    return path
