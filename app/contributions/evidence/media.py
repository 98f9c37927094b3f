"""Evidence uploads: the multipart body streamed to a temporary file under a byte limit, the
type read from the content (magic bytes), and images stored re-encoded from their pixels.

Nothing here holds a whole upload in memory: the body is parsed as it arrives
(python-multipart's push parser), the file part is written to disk chunk by chunk, and the
upload stops with 413 as soon as the part passes the limit.  Blocking work (disk writes, image
decoding and encoding) runs in threads.

The temporary file goes wherever it fails: a refused, broken or cancelled upload leaves
nothing behind.  A disk of the server that cannot take the file (the temporary directory full
or read-only) is the server's problem, not the client's: 507 `storage_full` or 503
`storage_unavailable`, logged for the operator (`app.core.errors.storage_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.errors import AppError, register_codes, storage_failed

register_codes(
    {
        "attachment_type_unsupported": (
            415,
            "仅支持 JPEG、PNG、WebP 图片或 PDF 文件",
            "Only JPEG, PNG or WebP images or PDF files are accepted",
        ),
        "attachment_too_large": (413, "文件不能超过 10 MB", "The file must not exceed 10 MB"),
        "attachment_corrupt": (
            422,
            "文件已损坏或无法识别",
            "The file is damaged or cannot be read",
        ),
        "attachment_missing": (
            422,
            "请在 multipart 表单字段 file 中上传一个文件",
            "Send one file in the multipart form field `file`",
        ),
        "attachment_too_many_pixels": (
            422,
            "图片像素过多，最多 6000 万像素",
            "The image has too many pixels (at most 60 megapixels)",
        ),
    }
)

logger = logging.getLogger("quyu.evidence")

MAX_BYTES = 10 * 1024 * 1024
# Room for the multipart envelope around the file (boundaries, part headers).
ENVELOPE_SLACK = 16 * 1024
FILE_FIELD = "file"
# The paths (under the API prefix) that take an upload, as a regular expression.
UPLOAD_PATH = r"/contributions/[^/]+/attachments"

JPEG, PNG, WEBP, PDF = "image/jpeg", "image/png", "image/webp", "application/pdf"
EXTENSIONS = {JPEG: "jpg", PNG: "png", WEBP: "webp", PDF: "pdf"}


def sniff(head: bytes) -> str | None:
    """The content type from the first bytes, or None when it is none of ours."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"%PDF-"):
        return PDF
    return None


def sanitize_name(name: str | None) -> str | None:
    """A display name safe to store and to send back in Content-Disposition: the last path
    component, control and separator characters removed, at most 120 characters."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r'[<>:"|?*;]', "_", name).strip(" .")
    return name[:120] or None


@dataclass
class Upload:
    """The file part of a multipart body, on disk.

    Its methods block (call them in threads) and take turns under one lock, so that a
    discard requested while a write, or the re-encoding, still runs in its thread (the request
    was cancelled meanwhile) waits for it and then removes the file: nothing is written after
    the file was discarded, and the discard always comes last."""

    path: Path
    size: int = 0
    filename: str | None = None
    head: bytes = b""
    _handle: IO[bytes] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _discarded: bool = field(default=False, repr=False)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.write(data)

    def finish(self) -> None:
        """Close the file after the last write (OSError when the last bytes do not fit)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                handle.close()

    def discard(self) -> None:
        """Close and remove the temporary file, whatever state it is in."""
        with self._lock:
            self._discarded = True
            handle, self._handle = self._handle, None
            if handle is not None:
                # Closing flushes what is buffered, which fails again on a full disk; the
                # file descriptor is closed all the same.
                with contextlib.suppress(OSError):
                    handle.close()
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                # Never in place of the error being answered; the operator hears of it.
                logger.error(
                    "temporary upload file left behind",
                    extra={"error_type": type(exc).__name__, "reason": exc.strerror},
                )


async def discard(upload: Upload) -> None:
    """`upload.discard()` in a thread that runs to its end even when the request is cancelled
    while it waits (a cancelled `to_thread` that has not started would never run)."""
    await asyncio.shield(asyncio.to_thread(upload.discard))


class _FilePart:
    """Callbacks for python-multipart that keep the one file part and count its bytes."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.in_file = False
        self.seen_file = False
        self.pending: list[bytes] = []

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD and b"filename" in options and not self.seen_file:
            self.in_file = True
            self.seen_file = True
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            return
        chunk = data[start:end]
        self.upload.size += len(chunk)
        if self.upload.size > MAX_BYTES:
            raise AppError("attachment_too_large")
        if len(self.upload.head) < 16:
            self.upload.head += chunk[: 16 - len(self.upload.head)]
        self.pending.append(chunk)

    def on_part_end(self) -> None:
        self.in_file = False


def _boundary(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise AppError("attachment_missing")
    return boundary


async def receive_upload(
    content_type: str, content_length: str | None, stream: AsyncIterator[bytes]
) -> Upload:
    """Stream the body's `file` part to a temporary file; 413 before reading anything when
    Content-Length already says it is too big, and as soon as the part passes 10 MB."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = -1
        if declared > MAX_BYTES + ENVELOPE_SLACK:
            raise AppError("attachment_too_large")
    boundary = _boundary(content_type)
    try:
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="quyu-upload-")
    except OSError as exc:
        raise storage_failed(exc, "upload spool") from exc
    upload = Upload(path=Path(name))
    upload._handle = os.fdopen(fd, "wb")
    part = _FilePart(upload)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part.on_part_begin,
            "on_part_data": part.on_part_data,
            "on_part_end": part.on_part_end,
            "on_header_field": part.on_header_field,
            "on_header_value": part.on_header_value,
            "on_header_end": part.on_header_end,
            "on_headers_finished": part.on_headers_finished,
        },
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
            if part.pending:
                data, part.pending = b"".join(part.pending), []
                await _spool(upload.write, data)
        parser.finalize()
        await _spool(upload.finish)
    except AppError:
        await discard(upload)
        raise
    except Exception as exc:
        # A broken multipart stream or a client that went away.
        await discard(upload)
        raise AppError("attachment_missing") from exc
    except BaseException:
        # Cancelled (the server shutting down): no temporary file stays behind either.
        await discard(upload)
        raise
    if not part.seen_file or upload.size == 0:
        await discard(upload)
        raise AppError("attachment_missing")
    return upload


async def _spool(write: Callable[..., object], *data: bytes) -> None:
    """A write to the temporary file, in a thread; a disk error is the server's problem."""
    try:
        await asyncio.to_thread(write, *data)
    except OSError as exc:
        raise storage_failed(exc, "upload spool") from exc


# --- checking and re-encoding, in a thread -----------------------------------------------------

# An image of more pixels is refused before it is decoded (a small file may announce a huge
# image: a decompression bomb).  Decoding one of this size takes about 180 MB (RGB), its
# upright copy as much again.
MAX_PIXELS = 60_000_000
# Files checked and images decoded at once, in the whole process: the memory above, times
# this.  They have threads of their own, so that a queue of photos never holds up the other
# work sent to threads (password hashing, file writes).
REENCODE_SLOTS = 2
_checking = ThreadPoolExecutor(max_workers=REENCODE_SLOTS, thread_name_prefix="quyu-evidence")

_FORMATS = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP"}
# Modes each encoder takes as they are; anything else is converted to RGB(A) first.
_MODES = {
    "JPEG": {"L", "RGB"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"},
    "WEBP": {"RGB", "RGBA"},
}
_SRGB = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class Checked:
    content_type: str
    size: int
    sha256: str


async def check(upload: Upload, content_type: str) -> Checked:
    """`check_and_clean` in one of the evidence threads (with the request's context, for
    its log lines)."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_checking, context.run, check_and_clean, upload, content_type)


def check_and_clean(upload: Upload, content_type: str) -> Checked:
    """Prove the file is what it claims and hash what will be stored.  A PDF must end like
    one; an image is decoded and replaced, in the temporary file, by a new file of the same
    format encoded from its pixels alone (`reencode`).  Blocking: call in a thread."""
    with upload._lock:
        if upload._discarded:
            raise AppError("attachment_missing")  # the request was cancelled meanwhile
        try:
            if content_type == PDF:
                data = upload.path.read_bytes()
                if b"%%EOF" not in data[-2048:]:
                    raise AppError("attachment_corrupt")
            else:
                data = reencode(upload.path, content_type)
                upload.path.write_bytes(data)
        except OSError as exc:
            raise storage_failed(exc, "upload spool") from exc
    return Checked(content_type, len(data), hashlib.sha256(data).hexdigest())


def reencode(path: Path, content_type: str) -> bytes:
    """The image at `path` encoded anew, in its own format, from its pixels only.

    The EXIF orientation is applied to the pixels first, so that the picture stands as it was
    shown; colours tagged with an ICC profile are converted to sRGB.  Nothing else of the
    original file is carried over: no EXIF, XMP (extended XMP included), IPTC, ICC profile,
    comment or PNG text chunk, wherever the camera or an editor put them.  Metadata is not
    removed container by container, which always misses one; it is never copied.

    422 `attachment_too_many_pixels` past `MAX_PIXELS`, checked from the header before
    decoding; 422 `attachment_corrupt` for a file that does not decode."""
    fmt = _FORMATS[content_type]
    try:
        # Past twice its own limit (Image.MAX_IMAGE_PIXELS) Pillow refuses to open at all;
        # between its limit and twice it warns (`warnings.catch_warnings` cannot turn that
        # into an error here: it is not thread-safe); ours, lower, refuses right after.
        with Image.open(path, formats=[fmt]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise AppError("attachment_too_many_pixels")
            image.load()
            upright = ImageOps.exif_transpose(image)
            icc = image.info.get("icc_profile")
            transparency = image.info.get("transparency")
        return _encode(_pixels(upright, fmt, icc, transparency), fmt)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AppError("attachment_too_many_pixels") from exc
    except OSError as exc:
        if exc.errno is not None:
            raise  # the disk's, not the image's
        raise AppError("attachment_corrupt") from exc
    except (
        UnidentifiedImageError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        TypeError,
        KeyError,
        IndexError,
    ) as exc:
        # What Pillow raises for a file that does not decode, or bad metadata in one.
        raise AppError("attachment_corrupt") from exc


def _pixels(image: Image.Image, fmt: str, icc: object, transparency: object) -> Image.Image:
    """`image` (a new object, ours to change) holding pixels and nothing more."""
    if isinstance(icc, bytes) and icc and image.mode in ("RGB", "RGBA"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=image.mode)
        except (ImageCms.PyCMSError, OSError, ValueError):
            converted = None  # a broken profile: the pixels as they are
        if converted is not None:
            image = converted
    # Everything Pillow read besides the pixels (exif, xmp, icc_profile, text chunks, dpi,
    # comments) lives in `info`; only a PNG's transparent colour is part of the picture.
    image.info = {}
    if fmt == "PNG" and transparency is not None and image.mode in ("1", "L", "P", "RGB"):
        image.info["transparency"] = transparency
    if image.mode not in _MODES[fmt]:
        alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if alpha and fmt != "JPEG" else "RGB")
        image.info = {}
    return image


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=90)
    elif fmt == "PNG":
        image.save(out, "PNG")
    else:
        image.save(out, "WEBP", quality=90)
    return out.getvalue()
