"""Evidence uploads: the multipart body streamed to a temporary file under a byte limit, the
type read from the content (magic bytes), images checked and location metadata removed.

Nothing here holds a whole upload in memory: the body is parsed as it arrives
(python-multipart's push parser), the file part is written to disk chunk by chunk, and the
upload stops with 413 as soon as the part passes the limit.  Blocking work (disk writes, image
decoding, rewriting metadata) runs in threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import struct
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.errors import AppError, register_codes

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
    }
)

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
    """The file part of a multipart body, on disk."""

    path: Path
    size: int = 0
    filename: str | None = None
    head: bytes = b""
    _handle: IO[bytes] | None = field(default=None, repr=False)

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.path.unlink(missing_ok=True)


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
    fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="quyu-upload-")
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
                await asyncio.to_thread(upload._handle.write, data)
        parser.finalize()
        await asyncio.to_thread(upload._handle.close)
        upload._handle = None
    except AppError:
        await asyncio.to_thread(upload.discard)
        raise
    except Exception as exc:
        await asyncio.to_thread(upload.discard)
        raise AppError("attachment_missing") from exc
    if not part.seen_file or upload.size == 0:
        await asyncio.to_thread(upload.discard)
        raise AppError("attachment_missing")
    return upload


# --- checking and cleaning, in a thread --------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    content_type: str
    size: int
    sha256: str


def check_and_clean(path: Path, content_type: str) -> Checked:
    """Decode images to prove they are what they claim (PIL), remove location metadata in
    place (losslessly: no re-encoding), and hash the final bytes.  Blocking: call in a thread."""
    data = path.read_bytes()
    if content_type == PDF:
        if b"%%EOF" not in data[-2048:]:
            raise AppError("attachment_corrupt")
    else:
        _verify_image(path, content_type)
        cleaned = {JPEG: strip_jpeg, PNG: strip_png, WEBP: strip_webp}[content_type](data)
        if cleaned != data:
            data = cleaned
            path.write_bytes(data)
    return Checked(content_type, len(data), hashlib.sha256(data).hexdigest())


def _verify_image(path: Path, content_type: str) -> None:
    import warnings

    from PIL import Image, UnidentifiedImageError

    formats = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[formats[content_type]]) as image:
                image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AppError("attachment_corrupt") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AppError("attachment_corrupt") from exc


# JPEG: APP1 "Exif" keeps everything but its GPS directory, which is blanked in place (the
# orientation and the rest stay valid); APP1 XMP packets, which may repeat the location, go.

_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_GPS_IFD_TAG = 0x8825
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


def strip_jpeg(data: bytes) -> bytes:
    out = bytearray(data[:2])
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise AppError("attachment_corrupt")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:  # start of scan: the rest is image data
            out += data[pos:]
            return bytes(out)
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise AppError("attachment_corrupt")
        payload = data[pos + 4 : end]
        if marker == 0xE1 and payload.startswith(_XMP):
            pos = end
            continue
        if marker == 0xE1 and payload.startswith(_EXIF):
            tiff = bytearray(payload[len(_EXIF) :])
            _blank_gps(tiff)
            payload = _EXIF + bytes(tiff)
        out += data[pos : pos + 4] + payload
        pos = end
    out += data[pos:]
    return bytes(out)


def _blank_gps(tiff: bytearray) -> None:
    """Zero the GPS IFD of a TIFF structure (its entries and the values they point to), and
    drop the pointer to it from IFD0.  Offsets elsewhere do not move."""
    if len(tiff) < 8 or bytes(tiff[:2]) not in (b"II", b"MM"):
        return
    e = "<" if tiff[:2] == b"II" else ">"

    def u16(at: int) -> int:
        return int(struct.unpack_from(e + "H", tiff, at)[0])

    def u32(at: int) -> int:
        return int(struct.unpack_from(e + "I", tiff, at)[0])

    try:
        ifd0 = u32(4)
        count = u16(ifd0)
        gps_offset = None
        for i in range(count):
            entry = ifd0 + 2 + 12 * i
            if u16(entry) == _GPS_IFD_TAG:
                gps_offset = u32(entry + 8)
                # Remove the entry: shift the later entries up, keep the next-IFD pointer.
                tail = ifd0 + 2 + 12 * count
                tiff[entry : tail - 12] = tiff[entry + 12 : tail]
                tiff[tail - 12 : tail] = b"\x00" * 12
                struct.pack_into(e + "H", tiff, ifd0, count - 1)
                # The next-IFD pointer sat at `tail`; move it up with the entries.
                tiff[tail - 12 : tail - 8] = tiff[tail : tail + 4]
                tiff[tail - 8 : tail + 4] = b"\x00" * 12
                break
        if gps_offset is None or gps_offset + 2 > len(tiff):
            return
        n = u16(gps_offset)
        for i in range(n):
            entry = gps_offset + 2 + 12 * i
            kind, items = u16(entry + 2), u32(entry + 4)
            size = _TYPE_SIZES.get(kind, 1) * items
            if size > 4:
                at = u32(entry + 8)
                if at + size <= len(tiff):
                    tiff[at : at + size] = b"\x00" * size
        end = min(len(tiff), gps_offset + 2 + 12 * n + 4)
        tiff[gps_offset:end] = b"\x00" * (end - gps_offset)
    except struct.error as exc:
        raise AppError("attachment_corrupt") from exc


# PNG: the eXIf chunk and XMP text chunks go (PNG keeps no orientation that matters there).

_PNG_DROP = {b"eXIf"}


def strip_png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise AppError("attachment_corrupt")
        body = data[pos + 8 : pos + 8 + length]
        xmp = kind in (b"iTXt", b"tEXt", b"zTXt") and body.startswith(b"XML:com.adobe.xmp\x00")
        if kind not in _PNG_DROP and not xmp:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            break
    return bytes(out)


# WebP: the EXIF and XMP chunks go, and the extended header stops announcing them.


def strip_webp(data: bytes) -> bytes:
    chunks = bytearray()
    pos = 12
    dropped = False
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + length + (length & 1)
        if end > len(data) + 1:
            raise AppError("attachment_corrupt")
        if kind in (b"EXIF", b"XMP "):
            dropped = True
        else:
            chunks += data[pos:end]
        pos = end
    if not dropped:
        return data
    if chunks[:4] == b"VP8X":
        chunks[8] &= ~(0x08 | 0x04) & 0xFF  # EXIF and XMP flags
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + bytes(chunks)
