"""Evidence: types read from the content, the 10 MB limit enforced while streaming, images
stored re-encoded from their pixels with no metadata, at most nine, and who may download."""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageCms
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contributions.evidence import media
from app.contributions.evidence.media import MAX_BYTES, sanitize_name
from app.models.contribution import ContributionAttachment
from tests.contributions.helpers import (
    World,
    count,
    create,
    in_state,
    make_member,
    written,
)
from tests.fixtures.problems import assert_problem

GPS = {1: "N", 2: (29.0, 52.0, 7.5), 3: "E", 4: (121.0, 33.0, 1.0)}


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: must survive
    exif[0x010F] = "HUAWEI"
    exif[0x8825] = GPS
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), "red").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def png_bytes(exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "PNG")
    data = buffer.getvalue()
    if exif is None:
        return data
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]  # after the IHDR chunk


def webp_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x8825] = GPS
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buffer, "WEBP", exif=exif)
    return buffer.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    record_id: str,
    data: bytes,
    name: str = "photo.jpg",
    content_type: str = "image/jpeg",
) -> httpx.Response:
    return await client.post(
        f"/contributions/{record_id}/attachments",
        files={"file": (name, data, content_type)},
        headers=headers,
    )


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


class TestContributionsAttachmentsCreate:
    async def test_jpeg_stored_without_gps(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        original = jpeg_with_gps()
        assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
        r = await upload(client, world.alice.headers, record["id"], original, "../../现场照片.jpg")
        assert r.status_code == 201, r.text
        data = r.json()
        assert data["content_type"] == "image/jpeg"
        assert data["original_name"] == "现场照片.jpg"
        (path,) = stored_files(storage_dir)
        stored = path.read_bytes()
        assert data["sha256"] == hashlib.sha256(stored).hexdigest()
        assert data["size"] == len(stored)
        image = Image.open(io.BytesIO(stored))
        # No EXIF at all: not the GPS, not the camera; the orientation (6: turn right) is
        # applied to the pixels instead, so that the picture stands as it was shown.
        assert image.getexif() == {}
        assert b"HUAWEI" not in stored and b"Exif" not in stored
        image.load()
        assert image.size == (24, 32)
        # Downloaded as stored, by its owner.
        r = await client.get(
            f"/contributions/{record['id']}/attachments/{data['id']}", headers=world.alice.headers
        )
        assert r.status_code == 200
        assert r.content == stored
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-content-type-options"] == "nosniff"
        r = await client.get(f"/contributions/{record['id']}", headers=world.alice.headers)
        assert r.json()["attachment_count"] == 1

    @pytest.mark.parametrize(
        ("maker", "content_type"),
        [
            (lambda: png_bytes(), "image/png"),
            (webp_bytes, "image/webp"),
            (lambda: PDF, "application/pdf"),
        ],
    )
    async def test_png_webp_pdf(
        self,
        client: httpx.AsyncClient,
        world: World,
        maker: object,
        content_type: str,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        assert callable(maker)
        # The declared type and name do not matter; the content does.
        r = await upload(
            client, world.alice.headers, record["id"], maker(), "x.bin", "application/octet-stream"
        )
        assert r.status_code == 201, r.text
        assert r.json()["content_type"] == content_type

    @pytest.mark.parametrize(
        "data",
        [
            b"this is not a jpeg at all, just text" * 10,
            b"GIF89a" + b"\x00" * 100,
            b"MZ\x90\x00" + b"\x00" * 100,
        ],
    )
    async def test_a_claimed_jpeg_that_is_not_is_415(
        self,
        client: httpx.AsyncClient,
        world: World,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        data: bytes,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        before = await written(sessionmaker)
        r = await upload(client, world.alice.headers, record["id"], data, "photo.jpg", "image/jpeg")
        assert_problem(r, 415, "attachment_type_unsupported")
        assert await written(sessionmaker) == before
        assert stored_files(storage_dir) == []

    async def test_jpeg_magic_on_garbage_is_refused(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        r = await upload(client, world.alice.headers, record["id"], b"\xff\xd8\xff\xe0" + b"x" * 64)
        assert_problem(r, 422, "attachment_corrupt")
        assert stored_files(storage_dir) == []

    async def test_10_mb_plus_one_byte_is_413_and_nothing_stored(
        self,
        client: httpx.AsyncClient,
        world: World,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        before = await written(sessionmaker)
        big = jpeg_with_gps()
        big += b"\x00" * (MAX_BYTES + 1 - len(big))
        assert len(big) == MAX_BYTES + 1
        r = await upload(client, world.alice.headers, record["id"], big)
        assert_problem(r, 413, "attachment_too_large")
        assert await written(sessionmaker) == before
        assert stored_files(storage_dir) == []
        # Exactly 10 MB of PDF is fine.
        exact = PDF[:-6] + b"\x00" * (MAX_BYTES - len(PDF)) + PDF[-6:]
        assert len(exact) == MAX_BYTES
        r = await upload(
            client, world.alice.headers, record["id"], exact, "a.pdf", "application/pdf"
        )
        assert r.status_code == 201, r.text

    async def test_declared_length_refused_before_reading(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            for _ in range(30):
                sent += 1024 * 1024
                yield b"\x00" * (1024 * 1024)

        r = await client.post(
            f"/contributions/{record['id']}/attachments",
            content=body(),
            headers={
                **world.alice.headers,
                "Content-Type": "multipart/form-data; boundary=xyz",
                "Content-Length": str(30 * 1024 * 1024),
            },
        )
        assert_problem(r, 413, "attachment_too_large")
        assert stored_files(storage_dir) == []

    async def test_a_chunked_body_is_cut_at_the_limit(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        """No Content-Length: the byte counter stops the upload at 10 MB, long before the 40 MB
        the client would send."""
        record = await create(client, world.alice, world.tree.r1)
        pulled = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal pulled
            head = (
                b"--xyz\r\n"
                b'Content-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
                b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0"
            )
            pulled += len(head)
            yield head
            for _ in range(40):
                pulled += 1024 * 1024
                yield b"\x01" * (1024 * 1024)
            yield b"\r\n--xyz--\r\n"

        r = await client.post(
            f"/contributions/{record['id']}/attachments",
            content=body(),
            headers={**world.alice.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert_problem(r, 413, "attachment_too_large")
        assert pulled < 12 * 1024 * 1024
        assert stored_files(storage_dir) == []

    async def test_no_file_part(self, client: httpx.AsyncClient, world: World) -> None:
        record = await create(client, world.alice, world.tree.r1)
        r = await client.post(
            f"/contributions/{record['id']}/attachments",
            data={"file": "just a field"},
            files={"other": ("a.jpg", jpeg_with_gps(), "image/jpeg")},
            headers=world.alice.headers,
        )
        assert_problem(r, 422, "attachment_missing")
        r = await client.post(
            f"/contributions/{record['id']}/attachments",
            json={"file": "x"},
            headers=world.alice.headers,
        )
        assert_problem(r, 422, "attachment_missing")

    async def test_at_most_nine(
        self,
        client: httpx.AsyncClient,
        world: World,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        image = png_bytes()
        for _ in range(9):
            r = await upload(client, world.alice.headers, record["id"], image, "a.png")
            assert r.status_code == 201, r.text
        r = await upload(client, world.alice.headers, record["id"], image, "a.png")
        assert_problem(r, 409, "attachment_limit")
        assert await count(sessionmaker, ContributionAttachment) == 9
        assert len(stored_files(storage_dir)) == 9

    async def test_only_the_owner_while_editable(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        for headers in (world.bob.headers, world.tree.h_r1):
            r = await upload(client, headers, record["id"], png_bytes(), "a.png")
            assert_problem(r, 404, "not_found")
        approved = await in_state(client, world, "approved")
        r = await upload(client, world.alice.headers, approved, png_bytes(), "a.png")
        assert_problem(r, 409, "invalid_transition")
        returned = await in_state(client, world, "returned")
        r = await upload(client, world.alice.headers, returned, png_bytes(), "a.png")
        assert r.status_code == 201, r.text
        assert len(stored_files(storage_dir)) == 1


class TestContributionsAttachmentsGet:
    async def test_who_may_download(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        record = await create(client, world.bob, world.tree.e1)
        r = await upload(
            client, world.bob.headers, record["id"], PDF, "证明.pdf", "application/pdf"
        )
        attachment_id = r.json()["id"]
        url = f"/contributions/{record['id']}/attachments/{attachment_id}"
        # Officers of e1's tree: r1's, the street's.
        for headers in (world.bob.headers, world.tree.h_r1, world.tree.h_s1_worker):
            r = await client.get(url, headers=headers)
            assert r.status_code == 200, r.text
            assert r.content == PDF
            assert "filename*=UTF-8''%E8%AF%81%E6%98%8E.pdf" in r.headers["content-disposition"]
        # Another member, an officer of a sibling subtree: 404, as for an unknown id.
        stranger = await make_member(db, world.tree.r1)
        for headers in (world.alice.headers, stranger.headers, world.tree.h_r2):
            assert_problem(await client.get(url, headers=headers), 404, "not_found")
        wrong_record = await create(client, world.alice, world.tree.r1)
        r = await client.get(
            f"/contributions/{wrong_record['id']}/attachments/{attachment_id}",
            headers=world.alice.headers,
        )
        assert_problem(r, 404, "not_found")
        r = await client.get(
            f"/contributions/{record['id']}/attachments/{uuid.uuid4()}", headers=world.bob.headers
        )
        assert_problem(r, 404, "not_found")

    async def test_list(self, client: httpx.AsyncClient, world: World) -> None:
        record = await create(client, world.bob, world.tree.e1)
        await upload(client, world.bob.headers, record["id"], PDF, "a.pdf", "application/pdf")
        await upload(client, world.bob.headers, record["id"], png_bytes(), "b.png", "image/png")
        url = f"/contributions/{record['id']}/attachments"
        r = await client.get(url, headers=world.tree.h_r1)
        assert r.status_code == 200, r.text
        assert [a["original_name"] for a in r.json()] == ["a.pdf", "b.png"]
        assert_problem(await client.get(url, headers=world.alice.headers), 404, "not_found")
        assert_problem(await client.get(url, headers=world.tree.h_r2), 404, "not_found")


class TestNames:
    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\a\\照片.jpg", "照片.jpg"),
            ('a"b;c\r\n.jpg', "a_b_c.jpg"),
            ("", None),
            ("...", None),
        ],
    )
    def test_names_sanitized(self, raw: str, clean: str | None) -> None:
        assert sanitize_name(raw) == clean


# --- metadata-free images: the attack files as cameras and editors write them ------------------

# A place one would rather not give away, in the forms the attack files carry it.
SECRET_GPS = {1: "N", 2: (29.0, 52.0, 7.5), 3: "E", 4: (121.0, 33.0, 1.0)}
SECRET_XMP_LAT, SECRET_XMP_LNG = "29,52.125N", "121,33.0167E"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def imagemagick_raw_profile(payload: bytes) -> bytes:
    """A "Raw profile type exif" text as ImageMagick writes it: a name, the length in
    decimal, then the bytes in hex, 72 digits a line."""
    digits = payload.hex()
    lines = "\n".join(digits[i : i + 72] for i in range(0, len(digits), 72))
    return f"\nexif\n{len(payload):8d}\n{lines}\n".encode()


def png_with_raw_exif_profile(compressed: bool) -> bytes:
    """A PNG whose EXIF (GPS) sits in a zTXt (or tEXt) chunk "Raw profile type exif", beside
    an iTXt XMP packet, a comment and an ICC profile."""
    exif = Image.Exif()
    exif[0x8825] = SECRET_GPS
    exif[0x010F] = "HUAWEI"
    text = imagemagick_raw_profile(exif.tobytes())
    keyword = b"Raw profile type exif\x00"
    profile = (
        png_chunk(b"zTXt", keyword + b"\x00" + zlib.compress(text))
        if compressed
        else png_chunk(b"tEXt", keyword + text)
    )
    xmp = png_chunk(
        b"iTXt",
        b"XML:com.adobe.xmp\x00\x00\x00\x00\x00"
        + f'<x:xmpmeta exif:GPSLatitude="{SECRET_XMP_LAT}"/>'.encode(),
    )
    comment = png_chunk(b"tEXt", b"Comment\x00taken at home")
    buffer = io.BytesIO()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (16, 12), (0, 0, 200)).save(buffer, "PNG", icc_profile=icc)
    data = buffer.getvalue()
    return data[:33] + profile + xmp + comment + data[33:]  # after IHDR


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_markers(data: bytes) -> list[int]:
    """The markers of a JPEG up to its image data (start of scan)."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return markers


def jpeg_with_extended_xmp() -> bytes:
    """A JPEG turned (EXIF orientation 6) whose location is in an extended XMP packet: the
    standard packet names it by GUID (`xmpNote:HasExtendedXMP`), and two APP1 segments
    "http://ns.adobe.com/xmp/extension/" carry it (GUID, full length, offset, part), as
    Photoshop and Lightroom write a packet too long for one segment.  Its left half is red,
    its right half blue."""
    extended = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        f'exif:GPSLatitude="{SECRET_XMP_LAT}" exif:GPSLongitude="{SECRET_XMP_LNG}" '
        'exif:GPSVersionID="2.2.0.0"/></rdf:RDF></x:xmpmeta>'
    ).encode()
    guid = hashlib.md5(extended).hexdigest().upper().encode()  # noqa: S324 - as the format says
    standard = (
        b"http://ns.adobe.com/xap/1.0/\x00"
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="'
        + guid
        + b'"/></rdf:RDF></x:xmpmeta>'
    )
    half = len(extended) // 2
    parts = [
        b"http://ns.adobe.com/xmp/extension/\x00"
        + guid
        + struct.pack(">II", len(extended), offset)
        + extended[offset:end]
        for offset, end in ((0, half), (half, len(extended)))
    ]
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = SECRET_GPS
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif, comment=b"home")
    data = buffer.getvalue()
    segments = jpeg_segment(0xE1, standard) + b"".join(jpeg_segment(0xE1, p) for p in parts)
    return data[:2] + segments + data[2:]


def assert_no_gps_trace(stored: bytes) -> None:
    rationals = b"".join(struct.pack(">II", int(v * 10), 10) for v in (29.0, 52.0, 7.5))
    for trace in (
        SECRET_XMP_LAT.encode(),
        SECRET_XMP_LNG.encode(),
        b"GPS",
        b"xmp",
        b"XMP",
        b"ns.adobe.com",
        b"Exif",
        b"exif",
        b"HUAWEI",
        b"Raw profile",
        b"home",
        rationals,
        rationals.hex().encode(),
        struct.pack(">II", 29, 1),
        struct.pack(">II", 29, 1).hex().encode(),
    ):
        assert trace not in stored, trace


class TestMetadataFreeImages:
    """Every image is stored re-encoded from its pixels: metadata in containers nobody
    thought of is gone as surely as EXIF."""

    async def stored_after_upload(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path, data: bytes
    ) -> tuple[dict[str, object], bytes]:
        record = await create(client, world.alice, world.tree.r1)
        r = await upload(client, world.alice.headers, record["id"], data, "x", "image/x")
        assert r.status_code == 201, r.text
        (path,) = stored_files(storage_dir)
        stored = path.read_bytes()
        body = r.json()
        assert body["sha256"] == hashlib.sha256(stored).hexdigest()
        assert body["size"] == len(stored)
        return body, stored

    @pytest.mark.parametrize("compressed", [True, False], ids=["zTXt", "tEXt"])
    async def test_png_with_exif_in_a_raw_profile_text_chunk(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path, compressed: bool
    ) -> None:
        attack = png_with_raw_exif_profile(compressed)
        # The attack is real: readers find the location in it.
        original = Image.open(io.BytesIO(attack))
        assert original.getexif().get_ifd(0x8825)[2] == (29.0, 52.0, 7.5)
        assert {b"zTXt" if compressed else b"tEXt", b"iTXt", b"iCCP"} <= set(png_chunks(attack))
        body, stored = await self.stored_after_upload(client, world, storage_dir, attack)
        assert body["content_type"] == "image/png"
        # Pixels only: no text, EXIF, ICC, time or physical-size chunk of any kind.
        assert set(png_chunks(stored)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
        assert_no_gps_trace(stored)
        image = Image.open(io.BytesIO(stored))
        assert image.getexif() == {}
        assert not {"exif", "xmp", "icc_profile", "Raw profile type exif", "Comment"} & set(
            image.info
        )
        assert image.size == (16, 12)
        assert image.convert("RGB").getpixel((8, 6)) == (0, 0, 200)

    async def test_jpeg_with_gps_in_extended_xmp(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        attack = jpeg_with_extended_xmp()
        assert b"http://ns.adobe.com/xmp/extension/\x00" in attack
        assert SECRET_XMP_LAT.encode() in attack
        assert Image.open(io.BytesIO(attack)).getexif().get_ifd(0x8825)
        body, stored = await self.stored_after_upload(client, world, storage_dir, attack)
        assert body["content_type"] == "image/jpeg"
        # Only what the picture needs: JFIF header, tables, frame, scan; no APPn but APP0,
        # no comment.
        assert set(jpeg_markers(stored)) <= {0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xDA}
        assert_no_gps_trace(stored)
        image = Image.open(io.BytesIO(stored))
        assert image.getexif() == {}
        assert not {"exif", "xmp", "icc_profile", "comment"} & set(image.info)
        # Orientation 6 applied to the pixels: 64x32 stands as 32x64, the left (red) half on
        # top, the right (blue) half below.
        assert image.size == (32, 64)
        red, blue = image.getpixel((16, 8)), image.getpixel((16, 56))
        assert isinstance(red, tuple) and isinstance(blue, tuple)
        assert red[0] > 200 and red[2] < 60, red
        assert blue[2] > 200 and blue[0] < 60, blue

    async def test_webp_keeps_no_exif_or_xmp_chunk(
        self, client: httpx.AsyncClient, world: World, storage_dir: Path
    ) -> None:
        exif = Image.Exif()
        exif[0x8825] = SECRET_GPS
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), "green").save(
            buffer, "WEBP", exif=exif, xmp=f'<x exif:GPSLatitude="{SECRET_XMP_LAT}"/>'.encode()
        )
        attack = buffer.getvalue()
        assert b"EXIF" in attack and b"XMP " in attack
        body, stored = await self.stored_after_upload(client, world, storage_dir, attack)
        assert body["content_type"] == "image/webp"
        assert b"EXIF" not in stored and b"XMP " not in stored and b"ICCP" not in stored
        assert_no_gps_trace(stored)
        image = Image.open(io.BytesIO(stored))
        image.load()
        assert image.size == (8, 8) and image.getexif() == {}

    async def test_re_encoding_runs_off_the_event_loop(
        self,
        client: httpx.AsyncClient,
        world: World,
        storage_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        threads: list[str] = []
        reencode = media.reencode

        def watched(path: Path, content_type: str) -> bytes:
            threads.append(threading.current_thread().name)
            return reencode(path, content_type)

        monkeypatch.setattr(media, "reencode", watched)
        await self.stored_after_upload(client, world, storage_dir, png_bytes())
        (name,) = threads
        assert name.startswith("quyu-evidence"), name

    async def test_too_many_pixels_is_422_before_decoding(
        self,
        client: httpx.AsyncClient,
        world: World,
        storage_dir: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        before = await written(sessionmaker)
        # 8000 x 8000 one-bit pixels: a file of a few kilobytes, 64 megapixels decoded.
        buffer = io.BytesIO()
        Image.new("1", (8000, 8000)).save(buffer, "PNG")
        bomb = buffer.getvalue()
        assert len(bomb) < 100_000
        # A header announcing 100000 x 100000 pixels (Pillow's own bomb limit).
        header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        announced = b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        announced += png_chunk(b"IEND", b"")
        for data in (bomb, announced):
            r = await upload(client, world.alice.headers, record["id"], data, "a.png")
            assert_problem(r, 422, "attachment_too_many_pixels")
        assert await written(sessionmaker) == before
        assert stored_files(storage_dir) == []
