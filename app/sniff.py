"""What an upload is, by its bytes alone: JPEG, PNG, HEIC, or refused.

File names and the Content-Type a client claims are never consulted.
"""

from __future__ import annotations

JPEG = "image/jpeg"
PNG = "image/png"
HEIC = "image/heic"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Brands that say the primary image is HEVC-coded (ISO/IEC 23008-12 annex B).
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# Brands of other codecs in the same container, refused even if an HEVC brand is listed too.
_OTHER_CODEC_BRANDS = frozenset({b"avif", b"avis", b"avio", b"jpeg", b"jpgs", b"vvic", b"j2ki"})
MAX_FTYP_SIZE = 4096


def sniff(head: bytes) -> str | None:
    """The accepted media type of a file that starts with `head`, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if _is_hevc_heif(head):
        return HEIC
    return None


def _is_hevc_heif(head: bytes) -> bool:
    if len(head) < 16 or head[4:8] != b"ftyp":
        return False
    size = int.from_bytes(head[0:4], "big")
    if not 16 <= size <= min(MAX_FTYP_SIZE, len(head)) or size % 4:
        return False
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, size, 4)}
    brands = {major} | compatible
    return bool(brands & _HEVC_BRANDS) and major not in _OTHER_CODEC_BRANDS
