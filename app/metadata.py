"""Remove metadata from JPEG and PNG files without touching their pixels: an allow-list.

Only what rendering needs is kept; everything else goes, whatever it is called, so a new or
private kind of metadata never slips through.

JPEG: of the APPn segments only the ICC profile (APP2 "ICC_PROFILE") and Adobe's colour
transform (APP14) stay. JFIF and JFXX (APP0) go too: they can carry a thumbnail from before an
edit. EXIF is replaced by a minimal one holding only the orientation, so browsers still show
the photo upright; comments and anything after the end-of-image marker are dropped (a
polyglot's tail, an Ultra HDR gain map). Scan data is copied byte for byte.

PNG: only the critical chunks and the ones that decide colours and transparency stay (iCCP,
sRGB, gAMA, cHRM, cICP, sBIT, tRNS); text, eXIf, tIME, pHYs, animation and private chunks go,
and so does everything after IEND. An orientation is applied to the pixels by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator


class MalformedImage(ValueError):
    """The file's structure is broken (truncated, or not what its signature said)."""


# --- JPEG ---------------------------------------------------------------------------

_EOI, _SOS, _APP2, _APP14, _COM = 0xD9, 0xDA, 0xE2, 0xEE, 0xFE
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


# More than this in metadata is refused before any decoder parses it: a camera writes
# tens of KiB, and a multi-megabyte EXIF or text block only ever feeds a parser.
MAX_METADATA_BYTES = 256 * 1024


def clean_jpeg(data: bytes, orientation: int = 1) -> bytes:
    segments = [_orientation_exif(orientation)]  # first, where readers look for it
    for marker, start, end in _jpeg_segments(data):
        if marker in _STANDALONE:
            segments.append(bytes((0xFF, marker)))
        elif _keep_jpeg_segment(marker, data[start + 2 : start + 16]):
            segments.append(bytes((0xFF, marker)) + data[start:end])
    return b"\xff\xd8" + b"".join(segments) + b"\xff\xd9"


def jpeg_metadata_bytes(data: bytes) -> int:
    """Bytes of APPn and comment segments before the image data."""
    total = 0
    for marker, start, end in _jpeg_segments(data):
        if marker == _SOS:
            break
        if 0xE0 <= marker <= 0xEF or marker == _COM:
            total += end - start
    return total


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each segment up to the end-of-image marker.

    `start` is where the length field begins (== end for markers without one); an SOS
    segment's `end` takes in the entropy-coded data after it.
    """
    if not data.startswith(b"\xff\xd8"):
        raise MalformedImage("not a JPEG stream")
    position, end = 2, len(data)
    while True:
        marker, position = _next_marker(data, position)
        if marker == _EOI:
            return
        if marker in _STANDALONE:
            yield marker, position, position
            continue
        if position + 2 > end:
            raise MalformedImage("the JPEG stops inside a segment header")
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2 or position + length > end:
            raise MalformedImage("the JPEG stops inside a segment")
        segment_end = position + length
        if marker == _SOS:
            segment_end = _end_of_scan(data, segment_end)
        yield marker, position, segment_end
        position = segment_end


def _next_marker(data: bytes, position: int) -> tuple[int, int]:
    if position >= len(data) or data[position] != 0xFF:
        raise MalformedImage("the JPEG has data where a marker should be")
    while position < len(data) and data[position] == 0xFF:  # fill bytes
        position += 1
    if position >= len(data):
        raise MalformedImage("the JPEG has no end-of-image marker")
    return data[position], position + 1


def _end_of_scan(data: bytes, position: int) -> int:
    """Where the entropy-coded data after an SOS header ends: at the next real marker."""
    while True:
        found = data.find(b"\xff", position)
        if found < 0 or found + 1 >= len(data):
            raise MalformedImage("the JPEG is truncated: its image data has no end")
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
            position = found + 2
            continue
        return found


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    """Whether to keep a segment, from its marker and the first bytes of its payload."""
    if marker == _APP2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == _APP14:
        return payload.startswith(b"Adobe")
    return not (0xE0 <= marker <= 0xEF or marker == _COM)


def _orientation_exif(orientation: int) -> bytes:
    """An APP1 segment whose EXIF holds one tag, Orientation; none when it is the default."""
    if orientation == 1 or not 1 <= orientation <= 8:
        return b""
    ifd_entry = (
        (0x0112).to_bytes(2, "big")  # Orientation
        + (3).to_bytes(2, "big")  # SHORT
        + (1).to_bytes(4, "big")  # one value
        + orientation.to_bytes(2, "big")
        + b"\x00\x00"
    )
    tiff = b"MM\x00\x2a" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big") + ifd_entry + bytes(4)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


# --- PNG ----------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PIXELS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
_PNG_KEPT = _PNG_PIXELS | {b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP", b"sBIT", b"tRNS"}


def clean_png(data: bytes) -> bytes:
    kept = [_PNG_SIGNATURE]
    for chunk_type, start, end in _png_chunks(data):
        if chunk_type in _PNG_KEPT:
            kept.append(data[start:end])
    return b"".join(kept)


def png_metadata_bytes(data: bytes) -> int:
    """Bytes of every chunk that does not hold or decode pixels, wherever they are."""
    return sum(end - start for kind, start, end in _png_chunks(data) if kind not in _PNG_PIXELS)


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk up to and including IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise MalformedImage("not a PNG stream")
    position, end = len(_PNG_SIGNATURE), len(data)
    while position + 8 <= end:
        length = int.from_bytes(data[position : position + 4], "big")
        chunk_type = data[position + 4 : position + 8]
        chunk_end = position + 12 + length  # length, type, data, CRC
        if chunk_end > end:
            raise MalformedImage("the PNG is truncated inside a chunk")
        yield chunk_type, position, chunk_end
        position = chunk_end
        if chunk_type == b"IEND":
            return
    raise MalformedImage("the PNG is truncated: it has no IEND chunk")
