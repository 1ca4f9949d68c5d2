"""Building blocks of an import: the report, the candidates a source yields, image checks.

Nothing here writes to the database; ``labeling.services.items`` turns candidates into
items. Every source (multipart upload, zip, server folder, JSON references) yields
``ImportCandidate``s, so the checks and the report are the same whichever way files come.

Untrusted input is handled as such: files are read with a size cap, zip entries are never
extracted to disk (they are read into memory, so a hostile name cannot write anywhere), and
server paths are resolved (symlinks included) before they are checked against
``settings.IMPORT_ROOTS``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Pillow format -> the suffix the stored file gets. The suffix is chosen from the format
# Pillow detected, never from the uploaded name, so the media view can trust it for the
# Content-Type. Formats outside this map are refused as ``unsupported_format``.
FORMAT_SUFFIXES: dict[str, str] = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",  # camera JPEGs with extra pictures: Pillow names them MPO; the first frame is a JPEG
    "TIFF": ".tif",
    "WEBP": ".webp",
    "BMP": ".bmp",
}
SUFFIX_CONTENT_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".tif": "image/tiff",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
DISPLAY_NAME_MAX = 255
METADATA_MAX_BYTES = 16 * 1024
# Files a zip or folder import skips without a word: OS clutter, not data.
_IGNORED_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


def import_setting(name: str) -> int:
    """An import limit from settings, with this module's defaults for the optional ones."""
    defaults = {
        "IMPORT_SYNC_MAX_FILES": 20,
        "IMPORT_SYNC_MAX_BYTES": 20 * 1024 * 1024,
        "IMPORT_MAX_ZIP_ENTRIES": 100_000,
        "IMPORT_MAX_REFERENCES": 10_000,
    }
    return int(getattr(settings, name, defaults.get(name, 0)))


class RejectCode(StrEnum):
    NOT_IMAGE = "not_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    DECOMPRESSION_BOMB = "decompression_bomb"
    FILE_TOO_LARGE = "file_too_large"
    UNSAFE_PATH = "unsafe_path"
    SYMLINK = "symlink"
    UNREADABLE = "unreadable"
    PATH_NOT_ALLOWED = "path_not_allowed"
    NOT_FOUND = "not_found"
    URL_NOT_ALLOWED = "url_not_allowed"
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    FETCH_FAILED = "fetch_failed"


@dataclass(frozen=True)
class Rejection:
    code: RejectCode
    reason: str


@dataclass
class ImportReport:
    """What an import did. ``as_dict()`` is the shape of the API, the command and ImportJob.report."""

    imported: int = 0
    duplicates: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)

    def add_duplicate(self, name: str, sha256: str) -> None:
        self.duplicates.append({"file": name, "sha256": sha256})

    def add_rejected(self, name: str, rejection: Rejection) -> None:
        self.rejected.append({"file": name, "reason": rejection.reason, "code": str(rejection.code)})

    @property
    def processed(self) -> int:
        return self.imported + len(self.duplicates) + len(self.rejected)

    def as_dict(self) -> dict[str, Any]:
        return {"imported": self.imported, "duplicates": self.duplicates, "rejected": self.rejected}


@dataclass(frozen=True)
class ImportCandidate:
    """One file offered for import. ``read(cap)`` returns at most ``cap`` bytes (or raises OSError).

    A candidate that a source already refuses (an unsafe zip name, a path outside the import
    roots) carries its ``rejection`` and no reader.
    """

    name: str
    read: Callable[[int], bytes] | None = None
    size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rejection: Rejection | None = None


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str
    thumbnail: bytes

    @property
    def suffix(self) -> str:
        return FORMAT_SUFFIXES[self.format]


# --- names ----------------------------------------------------------------------------


def display_name(raw: str, *, keep_leading_slash: bool = False) -> str:
    """A file name fit to show: NFC, no control or bidi-override characters, at most 255 chars.

    Keeps the tail when it must cut, so the extension survives.
    """
    name = unicodedata.normalize("NFC", raw.replace("\\", "/"))
    # Cc: control characters; Cf: format characters (bidi overrides that can disguise "gpj.exe").
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf"}).strip()
    name = name.rstrip("/") if keep_leading_slash else name.strip("/")
    if len(name) > DISPLAY_NAME_MAX:
        name = "…" + name[-(DISPLAY_NAME_MAX - 1) :]
    return name or "unnamed"


def _name_under_root(raw: str) -> str:
    """A reference's display name: its path below the import root it was given under."""
    for root in settings.IMPORT_ROOTS:
        for prefix in {root.rstrip("/"), os.path.realpath(root)}:
            if prefix and raw.startswith(prefix + "/"):
                return display_name(raw[len(prefix) + 1 :])
    return display_name(os.path.basename(raw))


def _ignored(parts: Sequence[str]) -> bool:
    return any(part in _IGNORED_PARTS for part in parts) or parts[-1].startswith("._")


# --- sources --------------------------------------------------------------------------


def _reader(fileobj: IO[bytes]) -> Callable[[int], bytes]:
    def read(cap: int) -> bytes:
        fileobj.seek(0)
        return fileobj.read(cap)

    return read


def candidates_from_uploads(files: Sequence[UploadedFile]) -> list[ImportCandidate]:
    """Candidates from multipart uploads (Django keeps big ones in temporary files)."""
    return [
        ImportCandidate(
            name=display_name(os.path.basename((f.name or "").replace("\\", "/"))), read=_reader(f), size=f.size
        )
        for f in files
    ]


def zip_entry_rejection(info: zipfile.ZipInfo) -> Rejection | None:
    """Why a zip entry is refused before it is read, or None."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return Rejection(RejectCode.UNSAFE_PATH, "Zip entry has an absolute path.")
    if ".." in parts:
        return Rejection(RejectCode.UNSAFE_PATH, "Zip entry path contains '..'.")
    if stat.S_ISLNK(info.external_attr >> 16):
        return Rejection(RejectCode.SYMLINK, "Zip entry is a symbolic link.")
    if info.flag_bits & 0x1:
        return Rejection(RejectCode.UNREADABLE, "Zip entry is encrypted.")
    if info.file_size > settings.IMPORT_MAX_FILE_BYTES:
        return Rejection(
            RejectCode.FILE_TOO_LARGE,
            f"Declared size {info.file_size} bytes is over the limit of {settings.IMPORT_MAX_FILE_BYTES}.",
        )
    return None


def zip_file_entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The entries an import looks at: directories and OS clutter left out."""
    return [
        info
        for info in zf.infolist()
        if not info.is_dir() and not _ignored(info.filename.replace("\\", "/").rstrip("/").split("/"))
    ]


def zip_check_limits(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The zip's file entries, after the whole-archive zip-bomb guards.

    Raises ImportTooLargeError when the sum of declared sizes is over IMPORT_MAX_ZIP_BYTES
    or there are more than IMPORT_MAX_ZIP_ENTRIES entries. (Each entry is also read with a
    cap, so a lying declared size gains nothing.)
    """
    from labeling.errors import ImportTooLargeError

    entries = zip_file_entries(zf)
    if len(entries) > import_setting("IMPORT_MAX_ZIP_ENTRIES"):
        raise ImportTooLargeError(
            f"The zip has {len(entries)} files, over the limit of {import_setting('IMPORT_MAX_ZIP_ENTRIES')}.",
            code="too_many_files",
        )
    declared = sum(info.file_size for info in entries)
    if declared > settings.IMPORT_MAX_ZIP_BYTES:
        raise ImportTooLargeError(
            f"The zip declares {declared} bytes uncompressed, over the limit of {settings.IMPORT_MAX_ZIP_BYTES}.",
            code="zip_too_large",
            extra={"declared_bytes": declared, "limit": settings.IMPORT_MAX_ZIP_BYTES},
        )
    return entries


def zip_open(fileobj: IO[bytes]) -> zipfile.ZipFile:
    """Open an uploaded zip; ImportRejectedError(code="invalid_zip") when it is not one."""
    from labeling.errors import ImportRejectedError

    try:
        return zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ImportRejectedError(f"Not a readable zip file: {exc}", code="invalid_zip")


def candidates_from_zip(zf: zipfile.ZipFile) -> Iterator[ImportCandidate]:
    for info in zip_check_limits(zf):
        name = display_name(info.filename)
        rejection = zip_entry_rejection(info)
        if rejection is not None:
            yield ImportCandidate(name=name, rejection=rejection)
            continue

        def read(cap: int, info: zipfile.ZipInfo = info) -> bytes:
            # ZipExtFile stops at the declared size and checks the CRC at the end; the cap
            # bounds memory whatever the header says.
            try:
                with zf.open(info) as entry:
                    return entry.read(cap)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, ValueError) as exc:
                raise OSError(str(exc)) from exc

        yield ImportCandidate(name=name, read=read, size=info.file_size)


def _path_reader(path: Path) -> Callable[[int], bytes]:
    def read(cap: int) -> bytes:
        with open(path, "rb") as f:
            return f.read(cap)

    return read


def _walk_files(directory: Path) -> list[Path]:
    """Regular files under ``directory``, sorted; hidden files and OS clutter left out.

    Symlinked directories are not followed (no cycles, no escape through a link).
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _IGNORED_PARTS)
        for filename in sorted(filenames):
            if filename.startswith(".") or _ignored([filename]):
                continue
            found.append(Path(dirpath) / filename)
    return found


def candidates_from_folder(directory: Path) -> list[ImportCandidate]:
    """Candidates for every file under a server folder (the management command; trusted input)."""
    directory = Path(directory)
    out = []
    for path in _walk_files(directory):
        try:
            size = path.stat().st_size
        except OSError as exc:
            out.append(
                ImportCandidate(
                    name=display_name(str(path.relative_to(directory))),
                    rejection=Rejection(RejectCode.UNREADABLE, f"Could not read: {exc.strerror}"),
                )
            )
            continue
        out.append(
            ImportCandidate(name=display_name(str(path.relative_to(directory))), read=_path_reader(path), size=size)
        )
    return out


def import_roots() -> list[Path]:
    return [Path(os.path.realpath(root)) for root in settings.IMPORT_ROOTS if root]


def reference_resolve(raw_path: str) -> Path | Rejection:
    """The real path of a reference if it lies under an import root, else a Rejection.

    The root check runs on the fully resolved path (symlinks followed) and before any
    existence check, so nothing is revealed about paths outside the roots.
    """
    roots = import_roots()
    if not raw_path or "\x00" in raw_path or not os.path.isabs(raw_path):
        return Rejection(RejectCode.PATH_NOT_ALLOWED, "Reference paths must be absolute paths under an import root.")
    real = Path(os.path.realpath(raw_path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        return Rejection(RejectCode.PATH_NOT_ALLOWED, "Path is not under a configured import root.")
    if not real.exists():
        return Rejection(RejectCode.NOT_FOUND, "No such file or directory.")
    return real


def candidates_from_references(references: Sequence[dict[str, Any]]) -> list[ImportCandidate]:
    """Candidates from JSON references ``{"path", "metadata"}``; a directory expands to its files."""
    out: list[ImportCandidate] = []
    for ref in references:
        raw = str(ref.get("path", ""))
        metadata = dict(ref.get("metadata") or {})
        resolved = reference_resolve(raw)
        if isinstance(resolved, Rejection):
            out.append(ImportCandidate(name=display_name(raw, keep_leading_slash=True), rejection=resolved))
            continue
        paths = _walk_files(resolved) if resolved.is_dir() else [resolved]
        for path in paths:
            given = raw if path == resolved else os.path.join(raw, str(path.relative_to(resolved)))
            name = _name_under_root(os.path.normpath(given))
            try:
                st = path.stat()
            except OSError as exc:
                out.append(
                    ImportCandidate(
                        name=name, rejection=Rejection(RejectCode.UNREADABLE, f"Could not read: {exc.strerror}")
                    )
                )
                continue
            if not stat.S_ISREG(st.st_mode):
                out.append(
                    ImportCandidate(name=name, rejection=Rejection(RejectCode.UNREADABLE, "Not a regular file."))
                )
                continue
            out.append(ImportCandidate(name=name, read=_path_reader(path), size=st.st_size, metadata=metadata))
    return out


# --- reading and checking one file ------------------------------------------------------


@dataclass(frozen=True)
class LoadedFile:
    data: bytes
    sha256: str


def candidate_load(candidate: ImportCandidate) -> LoadedFile | Rejection:
    """Read a candidate with the size cap and hash it."""
    if candidate.rejection is not None:
        return candidate.rejection
    assert candidate.read is not None  # noqa: S101 - a candidate has a reader or a rejection
    limit = settings.IMPORT_MAX_FILE_BYTES
    if candidate.size is not None and candidate.size > limit:
        return Rejection(RejectCode.FILE_TOO_LARGE, f"File is {candidate.size} bytes, over the limit of {limit}.")
    try:
        data = candidate.read(limit + 1)
    except OSError as exc:
        rejection = getattr(exc, "rejection", None)  # fetch.FetchRefused: the guard's own reason
        if isinstance(rejection, Rejection):
            return rejection
        return Rejection(RejectCode.UNREADABLE, f"Could not read: {exc.strerror or exc}")
    if len(data) > limit:
        return Rejection(RejectCode.FILE_TOO_LARGE, f"File is over the limit of {limit} bytes.")
    if not data:
        return Rejection(RejectCode.NOT_IMAGE, "Empty file.")
    return LoadedFile(data=data, sha256=hashlib.sha256(data).hexdigest())


def _max_pixels() -> int:
    limits = [settings.IMPORT_MAX_PIXELS]
    if Image.MAX_IMAGE_PIXELS:
        limits.append(int(Image.MAX_IMAGE_PIXELS))
    return min(limits)


def _bomb(width: int, height: int) -> Rejection:
    return Rejection(
        RejectCode.DECOMPRESSION_BOMB,
        f"Image is {width}x{height} = {width * height} pixels, over the limit of {_max_pixels()}.",
    )


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


def image_inspect(data: bytes) -> ImageInfo | Rejection:
    """Verify an image with Pillow, then decode it fully and make its thumbnail.

    Two passes because ``verify()`` leaves the image unusable and does not catch every
    truncation (JPEG); the full ``load()`` of the second pass does. Decompression-bomb
    warnings are turned into errors: the effective pixel limit is the smaller of
    settings.IMPORT_MAX_PIXELS and Image.MAX_IMAGE_PIXELS.
    """
    # Decoders Pillow may try. MPO has no opener of its own: the JPEG one returns it.
    allowed = [fmt for fmt in FORMAT_SUFFIXES if fmt != "MPO"]
    max_pixels = _max_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=allowed) as im:
                fmt = str(im.format)
                width, height = im.size
                if width * height > max_pixels:
                    return _bomb(width, height)
                im.verify()
        except UnidentifiedImageError:
            return _identify_other(data)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return Rejection(RejectCode.DECOMPRESSION_BOMB, _short(exc))
        except Exception as exc:  # noqa: BLE001 - decoders of hostile input raise anything
            return Rejection(RejectCode.CORRUPT, f"Corrupt image: {_short(exc)}")
        try:
            with Image.open(io.BytesIO(data), formats=allowed) as im:
                im.load()
                mode = im.mode
                thumb = thumbnail_webp(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return Rejection(RejectCode.DECOMPRESSION_BOMB, _short(exc))
        except _UnsupportedMode as exc:
            return Rejection(RejectCode.UNSUPPORTED_FORMAT, str(exc))
        except Exception as exc:  # noqa: BLE001
            return Rejection(RejectCode.CORRUPT, f"Corrupt or truncated image: {_short(exc)}")
    return ImageInfo(width=width, height=height, mode=mode, format=fmt, thumbnail=thumb)


def _identify_other(data: bytes) -> Rejection:
    """Tell "an image we do not take" from "not an image": identification only, no decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
    except Exception:  # noqa: BLE001
        return Rejection(RejectCode.NOT_IMAGE, "Not an image (Pillow could not identify it).")
    return Rejection(
        RejectCode.UNSUPPORTED_FORMAT, f"Unsupported image format {fmt}; allowed: PNG, JPEG, TIFF, WEBP, BMP."
    )


class _UnsupportedMode(Exception):
    pass


_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def thumbnail_webp(im: Image.Image) -> bytes:
    """A WebP thumbnail (RGB, fits THUMBNAIL_SIZE square). High bit depth is scaled by its range.

    A 16-bit X-ray uses a few thousand of its 65536 levels; cutting to 8 bits by shifting
    would give a black square, so the image's own min..max is stretched onto 0..255.
    """
    size = settings.THUMBNAIL_SIZE
    im = ImageOps.exif_transpose(im) if im.format in {"JPEG", "TIFF", "WEBP", "PNG"} else im
    if im.mode in _HIGH_DEPTH_MODES:
        im = im.convert("F" if im.mode == "F" else "I")
        im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        extrema = im.getextrema()  # (min, max) for a single band
        lo, hi = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        im = im.point(lambda v: v * scale - lo * scale).convert("L")
    else:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, rgba)
        try:
            im = im.convert("RGB")
        except ValueError as exc:
            raise _UnsupportedMode(f"Unsupported image mode {im.mode}.") from exc
        im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="WEBP", quality=80, method=4)
    return buf.getvalue()


def metadata_check(value: Any) -> dict[str, Any]:
    """Per-file metadata must be a JSON object of bounded size (ValueError otherwise)."""
    import json

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object.")
    if len(json.dumps(value, separators=(",", ":"))) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is over {METADATA_MAX_BYTES} bytes.")
    return value
