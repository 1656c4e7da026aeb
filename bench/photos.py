"""The bench's upload photos: ~2 MB, 12-megapixel JPEGs made from the HEICs in tests/images."""

from __future__ import annotations

from pathlib import Path

import pillow_heif
import pyvips

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "images"
PHONE_HEICS = ("Example1.heic", "heic-orientation-6.heic", "oneplus-heic.heic")
TARGET_BYTES = 2_000_000


def phone_jpegs(cache: Path) -> list[bytes]:
    """One JPEG per phone HEIC, made once and kept under `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    photos = []
    for name in PHONE_HEICS:
        path = cache / f"{Path(name).stem}.jpg"
        if not path.exists():
            path.write_bytes(_jpeg_near_target(heic_pixels(CORPUS / name)))
        photos.append(path.read_bytes())
    return photos


def heic_pixels(path: Path) -> pyvips.Image:
    heif = pillow_heif.open_heif(path.read_bytes(), convert_hdr_to_8bit=True)
    image = pyvips.Image.new_from_memory(
        heif.to_pillow().convert("RGB").tobytes(), heif.size[0], heif.size[1], 3, "uchar"
    )
    return image.copy(interpretation="srgb")


def _jpeg_near_target(image: pyvips.Image) -> bytes:
    """The highest quality that stays near TARGET_BYTES (phone photos are about that size)."""
    best = b""
    for quality in range(95, 40, -5):
        data: bytes = image.jpegsave_buffer(Q=quality, keep="none")
        best = data
        if len(data) <= TARGET_BYTES * 1.15:
            break
    return best
