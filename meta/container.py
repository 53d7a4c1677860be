"""The file formats of compressed latents: one signal per file, or many signals in one.

A file names the network and the codec it needs by short ids, carries the range-coded
symbols, and ends with a CRC32 of everything before it. Everything else (bits per
dimension, latent size, signal shape) is a property of the codec and the network those
ids select, so it is not repeated in every file::

    single signal (.afz)              many signals (.afzm)
    offset size field                 offset size field
    0      1    magic 0xAF            0      1    magic 0xAF
    1      1    0x21 (v2, single)     1      1    0x22 (v2, many)
    2      4    model id              2      4    model id
    6      2    codec id              6      2    codec id
    8      P    payload               8      V    signal count n (LEB128 varint)
    8+P    4    CRC32                 8+V    P    payload: one range-coded stream, n x D symbols
                                      8+V+P  4    CRC32

The single-signal overhead is :data:`SINGLE_OVERHEAD` = 12 bytes (0.094 bpp at 32x32);
a container pays it once for all its signals and gains the range coder's flush (up to
4 bytes per stream) once too. The model id is the first 4 bytes of
:func:`meta.codec.model_id` (a digest of the network's configuration and parameters),
the codec id the first 2 bytes of :attr:`meta.codec.Codec.codec_id` (a digest of the
quantizer and symbol tables). The payload length is what lies between header and CRC.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

MAGIC = 0xAF
VERSION = 2
SINGLE, MANY = 1, 2
MODEL_ID_BYTES, CODEC_ID_BYTES = 4, 2
_HEAD = struct.Struct(">BB4s2s")  # magic, version << 4 | kind, model id, codec id
_CRC = 4
SINGLE_OVERHEAD = _HEAD.size + _CRC
SUFFIX = {SINGLE: ".afz", MANY: ".afzm"}


@dataclasses.dataclass(frozen=True)
class Stream:
    """What a file holds: the ids, the number of signals (``None`` for a single one) and the payload."""

    model_id: bytes
    codec_id: bytes
    count: int | None
    payload: bytes

    @property
    def kind(self) -> int:
        return SINGLE if self.count is None else MANY


def short_ids(model_id: bytes, codec_id: bytes) -> tuple[bytes, bytes]:
    """The prefixes of a network's and a codec's full ids that files carry."""
    return bytes(model_id)[:MODEL_ID_BYTES], bytes(codec_id)[:CODEC_ID_BYTES]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, name: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError(f"{name}: truncated or damaged signal count")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def pack(stream: Stream) -> bytes:
    """Serializes a :class:`Stream`; the CRC32 goes last."""
    mid, cid = stream.model_id, stream.codec_id
    if len(mid) != MODEL_ID_BYTES or len(cid) != CODEC_ID_BYTES:
        raise ValueError(f"model id must be {MODEL_ID_BYTES} bytes and codec id {CODEC_ID_BYTES} "
                         f"(see short_ids), got {len(mid)} and {len(cid)}")
    if stream.count is not None and int(stream.count) < 1:
        raise ValueError(f"a many-signal file holds >= 1 signal, got count {stream.count}")
    body = _HEAD.pack(MAGIC, VERSION << 4 | stream.kind, mid, cid)
    if stream.count is not None:
        body += _varint(int(stream.count))
    body += bytes(stream.payload)
    return body + struct.pack(">I", zlib.crc32(body))


def unpack(data: bytes, name: str = "input") -> Stream:
    """Parses and verifies a file; ``ValueError`` says what is wrong (naming ``name``)."""
    data = bytes(data)
    if len(data) < SINGLE_OVERHEAD:
        raise ValueError(f"{name}: {len(data)} bytes is too short for a compressed file (the header and "
                         f"checksum alone take {SINGLE_OVERHEAD}); it is truncated or not a compressed file")
    magic, tag, mid, cid = _HEAD.unpack_from(data)
    if data.startswith(b"AFZ"):
        raise ValueError(f"{name}: a version-1 compressed file (33-byte header); this library reads version "
                         f"{VERSION}: encode the image again")
    if magic != MAGIC:
        raise ValueError(f"{name}: not a functa-compressed file (first byte {magic:#04x}, expected "
                         f"{MAGIC:#04x})")
    version, kind = tag >> 4, tag & 0xF
    if version != VERSION or kind not in (SINGLE, MANY):
        raise ValueError(f"{name}: file format version {version} kind {kind}; this library reads version "
                         f"{VERSION}, kinds {SINGLE} (single) and {MANY} (many)")
    (crc,) = struct.unpack_from(">I", data, len(data) - _CRC)
    if zlib.crc32(data[:-_CRC]) != crc:
        raise ValueError(f"{name}: checksum mismatch (CRC32 {zlib.crc32(data[:-_CRC]):08x}, stored {crc:08x}): "
                         "the file is truncated or corrupt")
    pos, count = _HEAD.size, None
    if kind == MANY:
        count, pos = _read_varint(data, pos, name)
        if count < 1 or pos > len(data) - _CRC:
            raise ValueError(f"{name}: damaged signal count {count}")
    return Stream(mid, cid, count, data[pos:-_CRC])


def overhead(count: int | None) -> int:
    """Bytes of a file besides its payload (``count=None``: a single-signal file)."""
    return SINGLE_OVERHEAD + (0 if count is None else len(_varint(int(count))))
