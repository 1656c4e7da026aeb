"""An image's width and height from the first bytes of its file, without decoding it.

Completing a V1 upload checks the stored object by reading only its start (ranged GETs): the
pixel count must be known before any worker decodes it, as V0 reads it from the header. A
JPEG's frame header can sit behind large APP segments (an Ultra HDR gain map, a 1 MB EXIF), so
`dimensions` says how many bytes it needs when the head it has is too short.
"""

from __future__ import annotations

import struct

from app.sniff import HEIC, JPEG, PNG


class NeedMore(Exception):
    """The head is too short: the dimensions are within its first `size` bytes, if at all."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class NoDimensions(Exception):
    """The file's structure is broken where the dimensions should be."""


# JPEG start-of-frame markers: C0-CF but C4 (Huffman tables), C8 (reserved), CC (arithmetic).
_SOF = {0xC0 + n for n in range(16)} - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, with no length after them.
_STANDALONE = {0x01, *range(0xD0, 0xD9)}


def dimensions(head: bytes, media_type: str) -> tuple[int, int]:
    """(width, height) as stored, before any EXIF orientation. Raises NeedMore or NoDimensions."""
    if media_type == JPEG:
        return _jpeg(head)
    if media_type == PNG:
        return _png(head)
    if media_type == HEIC:
        return _heic(head)
    raise NoDimensions(f"no header reader for {media_type}")


def _jpeg(head: bytes) -> tuple[int, int]:
    position = 2  # after SOI
    while True:
        if position + 4 > len(head):
            raise NeedMore(position + 4)
        if head[position] != 0xFF:
            raise NoDimensions("the JPEG's segments are broken")
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if marker == 0xDA:  # start of scan: no frame header before it
            raise NoDimensions("the JPEG has no frame header")
        (length,) = struct.unpack(">H", head[position + 2 : position + 4])
        if length < 2:
            raise NoDimensions("the JPEG's segments are broken")
        if marker in _SOF:
            if position + 9 > len(head):
                raise NeedMore(position + 9)
            height, width = struct.unpack(">HH", head[position + 5 : position + 9])
            return width, height
        position += 2 + length


def _png(head: bytes) -> tuple[int, int]:
    if len(head) < 24:
        raise NeedMore(24)
    if head[12:16] != b"IHDR":
        raise NoDimensions("the PNG does not start with its IHDR chunk")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _heic(head: bytes) -> tuple[int, int]:
    """The largest 'ispe' (image spatial extents) property: the primary image's, not a
    thumbnail's or a tile's. ISO/IEC 14496-12 boxes: meta > iprp > ipco > ispe."""
    meta = _find_box(head, 0, len(head), b"meta", top_level=True)
    iprp = _find_box(head, meta[0] + 4, meta[1], b"iprp")  # meta is a full box: 4 more bytes
    ipco = _find_box(head, iprp[0], iprp[1], b"ipco")
    sizes = []
    position = ipco[0]
    while position < ipco[1]:
        kind, start, end = _box(head, position, ipco[1])
        if kind == b"ispe":
            if end - start < 12:
                raise NoDimensions("the HEIC's image extents are broken")
            sizes.append(struct.unpack(">II", head[start + 4 : start + 12]))
        position = end
    if not sizes:
        raise NoDimensions("the HEIC names no image extents")
    width, height = max(sizes, key=lambda size: size[0] * size[1])
    return width, height


def _find_box(
    head: bytes, position: int, end: int, kind: bytes, top_level: bool = False
) -> tuple[int, int]:
    """Where the content of the first box of `kind` in [position, end) starts and ends."""
    while position < end:
        found, start, stop = _box(head, position, end, top_level)
        if found == kind:
            if stop > len(head):
                raise NeedMore(stop)
            return start, stop
        position = stop
    if top_level:
        raise NeedMore(len(head) + 64 * 1024)
    raise NoDimensions(f"the HEIC has no {kind.decode()} box where it should")


def _box(head: bytes, position: int, end: int, top_level: bool = False) -> tuple[bytes, int, int]:
    """(kind, content start, box end) of the box at `position`."""
    if position + 8 > len(head):
        raise NeedMore(position + 16)
    size, kind = struct.unpack(">I4s", head[position : position + 8])
    start = position + 8
    if size == 1:  # a 64-bit size follows
        if position + 16 > len(head):
            raise NeedMore(position + 16)
        (size,) = struct.unpack(">Q", head[position + 8 : position + 16])
        start = position + 16
    elif size == 0:  # to the end of the file (or of the box that holds it)
        size = (end if not top_level else 1 << 62) - position
    if size < start - position:
        raise NoDimensions("the HEIC's boxes are broken")
    stop = position + size
    if not top_level and stop > end:
        raise NoDimensions("the HEIC's boxes are broken")
    return kind, start, stop
