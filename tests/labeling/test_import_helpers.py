"""Image and zip builders shared by the import and media tests (no tests here).

Named test_import_* only so that it lives among the files this feature owns.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.conftest import png_bytes


def jpeg_bytes(color: tuple[int, int, int] = (10, 120, 200), size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


def png16_bytes(size: tuple[int, int] = (64, 48), lo: int = 1000, hi: int = 5000) -> bytes:
    """A 16-bit grayscale PNG whose values span lo..hi (like an X-ray uses a sliver of 0..65535)."""
    im = Image.new("I;16", size)
    w, _ = size
    for x in range(w):
        for y in range(size[1]):
            im.putpixel((x, y), lo + (hi - lo) * x // (w - 1))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a decompression-bomb header."""
    data = bytearray(png_bytes())
    # signature (8) | length (4) | "IHDR" (4) | width (4) | height (4) | ... | CRC over type+data
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def distinct_pngs(n: int, offset: int = 0) -> list[bytes]:
    return [png_bytes(color=((i + offset) % 256, (i + offset) // 256 % 256, 7), size=(8, 8)) for i in range(n)]


def upload(name: str, content: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def make_zip(
    entries: list[tuple[str, bytes]], *, symlinks: dict[str, str] | None = None, dirs: list[str] = ()
) -> bytes:  # type: ignore[assignment]
    """A zip with ``entries`` as written (absolute or '..' names kept), plus symlink and directory entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d.rstrip("/") + "/"), b"")
        for name, content in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()
