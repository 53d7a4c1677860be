"""Classical image codecs through Pillow, and the bare payload of each format's file.

Two accountings of a compressed image: the whole file, and its payload, the codec's
own bitstream without the container a format wraps it in (which at 32x32 can outweigh
the data). Each parser reads the format's documented structure:

* WebP (RIFF): the data of the ``VP8 `` / ``VP8L`` chunk (RIFF header, ``VP8X`` and other
  chunks excluded);
* AVIF and HEIC (ISO base media file format boxes): the contents of the ``mdat`` boxes
  (``ftyp``, ``meta`` with its item properties and locations excluded);
* JPEG XL: the codestream: a bare codestream is its own payload; in the ISOBMFF
  container, the ``jxlc`` box or the ``jxlp`` boxes (less their 4-byte index);
* JPEG: the entropy-coded scan data (from the end of each SOS header to the next
  marker), without tables and markers.

AVIF (AV1 intra through libavif; Pillow writes it itself from 11.3 on, older ones through
``pillow-avif-plugin``), HEIC (x265 HEVC intra, ``pillow-heif``) and JPEG XL (libjxl,
``pillow-jxl-plugin``) come from optional Pillow plugins (``pip install -e ".[codecs]"``);
a missing one is reported, never skipped silently (:func:`available`).
"""

from __future__ import annotations

import importlib
import io
import struct

import numpy as np

# name -> (Pillow format, plugin module to import or None, quality sweep, parser name)
CODECS = {
    "jpeg 4:4:4": ("JPEG", None, (1, 5, 10, 20, 30, 50, 70, 85, 95), "jpeg"),
    "jpeg 4:2:0": ("JPEG", None, (1, 5, 10, 20, 30, 50, 70, 85, 95), "jpeg"),
    "webp": ("WEBP", None, (0, 5, 10, 20, 30, 50, 70, 85, 95), "riff"),
    "avif": ("AVIF", "pillow_avif", (0, 10, 20, 30, 40, 50, 60, 70), "isobmff"),
    "heic": ("HEIF", "pillow_heif", (0, 10, 20, 30, 40, 50, 60), "isobmff"),
    "jpeg xl": ("JXL", "pillow_jxl", (1, 10, 20, 30, 40, 50, 60, 70), "jxl"),
}


def available(name: str) -> str | None:
    """``None`` when codec ``name`` can encode here, else why not (the missing plugin)."""
    from PIL import Image, features

    fmt, plugin, _, _ = CODECS[name]
    Image.init()
    if plugin is not None and fmt not in Image.SAVE:  # Pillow >= 11.3 writes AVIF itself
        try:
            module = importlib.import_module(plugin)
        except ImportError:
            return f"plugin {plugin} is not installed (pip install -e '.[codecs]')"
        if plugin == "pillow_heif":
            module.register_heif_opener()
    if fmt == "WEBP" and not features.check("webp"):
        return "Pillow was built without WebP"
    Image.init()
    if fmt not in Image.SAVE:
        return f"Pillow cannot write {fmt} here"
    return None


def encode(name: str, image_u8: np.ndarray, quality: int) -> bytes:
    """The file bytes of ``image_u8 [H, W, 3]`` in codec ``name`` at ``quality`` (a gray
    ``[H, W, 1]`` image goes in as its value in all three channels)."""
    from PIL import Image

    if image_u8.shape[-1] == 1:
        image_u8 = np.repeat(image_u8, 3, axis=-1)
    fmt = CODECS[name][0]
    opts = {"JPEG": {"subsampling": 0 if name.endswith("4:4:4") else 2}, "WEBP": {"method": 6}}.get(fmt, {})
    if fmt == "HEIF":
        opts = {"chroma": 444}
    buf = io.BytesIO()
    Image.fromarray(image_u8).save(buf, format=fmt, quality=int(quality), **opts)
    return buf.getvalue()


def decode(data: bytes, channels: int = 3) -> np.ndarray:
    """``[H, W, channels]`` float32 on ``[0, 1]`` of any file :func:`encode` wrote
    (``channels=1``: the mean of the decoded three)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255.0
    return rgb.mean(-1, keepdims=True) if channels == 1 else rgb


def payload(name: str, data: bytes) -> int:
    """Bytes of the codec's own bitstream in the file ``data`` (module docstring)."""
    return PARSERS[CODECS[name][3]](data)


def riff_payload(data: bytes) -> int:
    """WebP: size of the ``VP8 `` or ``VP8L`` chunk's data."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a RIFF/WEBP file")
    pos, found = 12, 0
    while pos + 8 <= len(data):
        fourcc, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if fourcc in (b"VP8 ", b"VP8L"):
            found += size
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    if not found:
        raise ValueError("no VP8/VP8L chunk in the WebP file")
    return found


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """``(type, content start, content end)`` of the ISOBMFF boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I", data[pos:pos + 4])[0], data[pos + 4:pos + 8]
        head = 8
        if size == 1:  # 64-bit size follows
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:  # to the end of the file
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"damaged box {kind!r} at byte {pos}")
        yield kind, pos + head, pos + size
        pos += size


def isobmff_payload(data: bytes) -> int:
    """AVIF / HEIC: bytes inside the ``mdat`` boxes."""
    total = sum(b - a for kind, a, b in _boxes(data) if kind == b"mdat")
    if not total:
        raise ValueError("no mdat box in the file")
    return total


def jxl_payload(data: bytes) -> int:
    """JPEG XL: the codestream (bare: the whole file; container: ``jxlc`` or ``jxlp`` boxes)."""
    if data[:2] == b"\xff\x0a":
        return len(data)
    boxes = list(_boxes(data))
    if not boxes or boxes[0][0] != b"JXL ":
        raise ValueError("neither a JPEG XL codestream nor a JPEG XL container")
    total = sum(b - a for kind, a, b in boxes if kind == b"jxlc")
    total += sum(b - a - 4 for kind, a, b in boxes if kind == b"jxlp")
    if not total:
        raise ValueError("no jxlc/jxlp box in the JPEG XL container")
    return total


def jpeg_payload(data: bytes) -> int:
    """JPEG: the entropy-coded data of every scan (markers, tables and headers excluded)."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file")
    pos, total = 2, 0
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"damaged JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        pos += 2 + length
        if marker == 0xDA:  # SOS: the scan runs to the next marker that is not a stuffed 0xFF00 or a restart
            start = pos
            while pos + 1 < len(data) and not (data[pos] == 0xFF and data[pos + 1] not in (0x00, *range(0xD0, 0xD8))):
                pos += 1
            total += pos - start
    return total


PARSERS = {"riff": riff_payload, "isobmff": isobmff_payload, "jxl": jxl_payload, "jpeg": jpeg_payload}
