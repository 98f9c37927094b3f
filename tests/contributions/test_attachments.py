"""Evidence: types read from the content, the 10 MB limit enforced while streaming, location
metadata removed, at most nine, and who may download."""

from __future__ import annotations

import hashlib
import io
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contributions.evidence.media import MAX_BYTES, sanitize_name, strip_png, strip_webp
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
        exif = image.getexif()
        assert exif.get_ifd(0x8825) == {}
        assert 0x8825 not in exif
        assert exif[0x0112] == 6 and exif[0x010F] == "HUAWEI"
        image.load()
        assert image.size == (32, 24)
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


class TestCleaning:
    def test_png_exif_chunk_removed(self) -> None:
        exif = Image.Exif()
        exif[0x8825] = GPS
        data = png_bytes(exif.tobytes())
        assert b"eXIf" in data
        cleaned = strip_png(data)
        assert b"eXIf" not in cleaned
        Image.open(io.BytesIO(cleaned)).load()

    def test_webp_exif_removed(self) -> None:
        data = webp_bytes()
        assert b"EXIF" in data
        cleaned = strip_webp(data)
        assert b"EXIF" not in cleaned
        image = Image.open(io.BytesIO(cleaned))
        image.load()
        assert image.getexif().get_ifd(0x8825) == {}

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
