"""Exports for the secretary's spreadsheet: CSV (UTF-8 with BOM, for Excel) or xlsx.

Starting an export writes who exported what to the audit log (PIPL), in the request's
transaction, and hands back a stream.  The stream runs after the request's session is closed:
rows are read in keyset chunks, each in a short transaction of its own (no long-lived snapshot
or SQLite write lock while a slow client downloads).  CSV is produced by a generator as chunks
arrive; xlsx is written by openpyxl in write-only mode (rows flushed to a temporary file, never
a whole sheet in memory) in a thread, then streamed from the file.  What each line says is in
`sheets`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contributions.records import cursor_key
from app.core import clock
from app.core.audit import audit
from app.core.errors import ValidationFailed
from app.core.i18n import text
from app.db.session import separate_transaction
from app.models.contribution import ContributionStatus
from app.models.organization import Organization
from app.models.user import User
from app.reports import repository as repo
from app.reports import sheets
from app.reports.repository import After, AttendanceLine, ContributionLine, MemberLine
from app.reports.schemas import ExportFormat, ExportKind
from app.reports.stats import local_midnight

CHUNK_BYTES = 64 * 1024
MEDIA_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

L = TypeVar("L", ContributionLine, MemberLine, AttendanceLine)


@dataclass(frozen=True)
class ExportQuery:
    kind: ExportKind
    path: str
    status: str | None = None
    first: date | None = None
    last: date | None = None
    # Attendance: activities starting in [starts, ends), the local days first..last.
    starts: datetime | None = None
    ends: datetime | None = None


@dataclass(frozen=True)
class ExportFile:
    """A started export: its bytes as they are produced, and how to name them."""

    chunks: AsyncIterator[bytes]
    media_type: str
    filename: str  # the sheet's title and today's date, e.g. 双岗位记录-2026-03-01.xlsx
    ascii_name: str  # for clients that do not read RFC 5987 names, e.g. contributions.xlsx


@dataclass(frozen=True)
class _Source(Generic[L]):
    fetch: Callable[[AsyncSession, After], Awaitable[list[L]]]
    line: Callable[[L], list[Any]]

    async def chunks(self, factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[list[Any]]:
        """The spreadsheet's lines, a chunk at a time, each chunk read in its own short
        transaction."""
        after: After = None
        while True:
            async with separate_transaction(
                factory, why="an export streams after the request's session has closed"
            ) as session:
                chunk = await self.fetch(session, after)
            if not chunk:
                return
            yield [[sheets.safe(v) for v in self.line(r)] for r in chunk]
            if len(chunk) < repo.EXPORT_CHUNK:
                return
            after = cursor_key(chunk[-1])


def _lines(
    factory: async_sessionmaker[AsyncSession], query: ExportQuery
) -> AsyncIterator[list[Any]]:
    if query.kind == "members":

        async def members(s: AsyncSession, after: After) -> list[MemberLine]:
            return await repo.export_members(s, query.path, after)

        return _Source(members, sheets.member_line).chunks(factory)
    if query.kind == "contributions":

        async def contributions(s: AsyncSession, after: After) -> list[ContributionLine]:
            return await repo.export_contributions(
                s, query.path, status=query.status, first=query.first, last=query.last, after=after
            )

        return _Source(contributions, sheets.contribution_line).chunks(factory)

    async def attendance(s: AsyncSession, after: After) -> list[AttendanceLine]:
        return await repo.export_attendance(
            s, query.path, starts=query.starts, ends=query.ends, after=after
        )

    return _Source(attendance, sheets.attendance_line).chunks(factory)


async def csv_stream(
    factory: async_sessionmaker[AsyncSession], query: ExportQuery
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(sheets.HEADERS[query.kind])
    yield "\ufeff".encode() + buffer.getvalue().encode()
    async for chunk in _lines(factory, query):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(chunk)
        yield buffer.getvalue().encode()


async def xlsx_stream(
    factory: async_sessionmaker[AsyncSession], query: ExportQuery
) -> AsyncIterator[bytes]:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(sheets.TITLES[query.kind])
    sheet.append(sheets.HEADERS[query.kind])

    def append(rows: list[Any]) -> None:
        for row in rows:
            sheet.append(row)

    fd, name = tempfile.mkstemp(prefix="quyu-export-", suffix=".xlsx")
    os.close(fd)
    try:
        async for chunk in _lines(factory, query):
            await asyncio.to_thread(append, chunk)
        await asyncio.to_thread(workbook.save, name)
        handle = await asyncio.to_thread(open, name, "rb")
        try:
            while data := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield data
        finally:
            await asyncio.to_thread(handle.close)
    finally:
        await asyncio.to_thread(os.unlink, name)


def start(
    session: AsyncSession,
    factory: async_sessionmaker[AsyncSession],
    actor: User,
    org: Organization,
    kind: ExportKind,
    format: ExportFormat,
    *,
    status: ContributionStatus | None,
    first: date | None,
    last: date | None,
) -> ExportFile:
    """An export of `org`'s subtree by `actor` (already known to be an officer over it): the
    audit entry now, in the request's transaction; the rows later, as the stream is read.
    `status` filters contributions only; `first`/`last` are local days.

    Every parameter is checked here, before the response starts: once the first byte is sent,
    an error can only cut the file short."""
    if first is not None and last is not None and first > last:
        raise ValidationFailed("from", text("起始日期不能晚于结束日期", "`from` is after `to`"))
    query = ExportQuery(
        kind=kind,
        path=org.path,
        status=status.value if status and kind == "contributions" else None,
        first=first,
        last=last,
        starts=local_midnight(first) if first else None,
        ends=local_midnight(last + timedelta(days=1)) if last else None,
    )
    audit(
        session,
        action=f"export.{kind}",
        object_type="export",
        object_id=None,
        org_id=org.id,
        actor_id=actor.id,
        comment=(f"format={format} status={query.status or ''} from={first or ''} to={last or ''}"),
    )
    stream = csv_stream(factory, query) if format == "csv" else xlsx_stream(factory, query)
    return ExportFile(
        chunks=stream,
        media_type=MEDIA_TYPES[format],
        filename=f"{sheets.TITLES[kind]}-{clock.local_today().isoformat()}.{format}",
        ascii_name=f"{kind}.{format}",
    )
