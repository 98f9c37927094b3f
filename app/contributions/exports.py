"""Exports for the secretary's spreadsheet: CSV (UTF-8 with BOM, for Excel) or xlsx.

Rows are read in keyset chunks, each in a short transaction of its own (no long-lived
snapshot or SQLite write lock while a slow client downloads).  CSV is produced by a generator
as chunks arrive; xlsx is written by openpyxl in write-only mode (rows flushed to a temporary
file, never a whole sheet in memory) in a thread, then streamed from the file.  Phone numbers
and ID numbers are masked; headers are in Chinese; cells that a spreadsheet would read as a
formula are quoted.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contributions import categories
from app.contributions import repository as repo
from app.contributions.stats import local_midnight
from app.core import clock
from app.core.crypto import mask_phone

CHUNK_BYTES = 64 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_STATUS_ZH = {
    "pending": "待审核",
    "approved": "已通过",
    "rejected": "已驳回",
    "returned": "已退回",
    "withdrawn": "已撤回",
}
_POST_ZH = {"enterprise": "企业职责岗", "community": "社会义务岗"}
_SOURCE_ZH = {"manual": "个人填报", "activity": "活动记录"}
_PARTY_ZH = {"full": "正式党员", "probationary": "预备党员"}
_GENDER_ZH = {"male": "男", "female": "女"}
_ATTENDANCE_ZH = {"present": "出席", "absent": "缺席"}
_METHOD_ZH = {"code": "签到码", "geo": "定位签到", "manual": "人工登记"}

HEADERS: dict[str, list[str]] = {
    "members": [
        "姓名",
        "手机号",
        "身份证号",
        "性别",
        "党员类别",
        "工作单位",
        "职务",
        "组织关系所在",
        "报到组织",
        "流动党员",
        "报到通过时间",
    ],
    "contributions": [
        "姓名",
        "手机号",
        "所属组织",
        "岗位",
        "类别",
        "事项",
        "日期",
        "时长（小时）",
        "状态",
        "来源",
        "提交时间",
        "审核时间",
        "审核意见",
    ],
    "attendance": [
        "活动",
        "活动开始时间",
        "主办组织",
        "姓名",
        "手机号",
        "出勤",
        "签到方式",
        "签到时间",
        "服务时长（小时）",
    ],
}
TITLES = {"members": "党员名册", "contributions": "双岗位记录", "attendance": "活动出勤"}


def safe(value: Any) -> Any:
    """Quote text a spreadsheet would take for a formula (CSV/formula injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _local(moment: datetime | None) -> str:
    return moment.astimezone(clock.LOCAL_TZ).strftime("%Y-%m-%d %H:%M") if moment else ""


def _member_row(r: Any) -> list[Any]:
    return [
        r.user_name,
        mask_phone(r.user_phone),
        r.id_number_masked or "",
        _GENDER_ZH.get(r.gender or "", ""),
        _PARTY_ZH.get(r.party_status or "", ""),
        r.employer or "",
        r.post_title or "",
        r.record_org_name or "",
        r.org_name,
        "是" if r.floating else "否",
        _local(r.decided_at),
    ]


def _contribution_row(r: Any) -> list[Any]:
    return [
        r.user_name,
        mask_phone(r.user_phone),
        r.org_name,
        _POST_ZH.get(r.post, r.post),
        categories.name_zh(r.post, r.category),
        r.title,
        r.occurred_on.isoformat(),
        (r.half_hours or 0) / 2,
        _STATUS_ZH.get(r.status, r.status),
        _SOURCE_ZH.get(r.source, r.source),
        _local(r.submitted_at),
        _local(r.decided_at),
        r.decision_comment or "",
    ]


def _attendance_row(r: Any) -> list[Any]:
    return [
        r.activity_title,
        _local(r.starts_at),
        r.org_name,
        r.user_name,
        mask_phone(r.user_phone),
        _ATTENDANCE_ZH.get(r.status, r.status),
        _METHOD_ZH.get(r.method, r.method),
        _local(r.attended_at),
        r.service_hours if r.status == "present" else 0,
    ]


Fetch = Callable[[AsyncSession, tuple[datetime, uuid.UUID] | None], Awaitable[Sequence[Any]]]


@dataclass(frozen=True)
class ExportQuery:
    kind: str
    path: str
    status: str | None = None
    first: date | None = None
    last: date | None = None

    def fetcher(self) -> tuple[Fetch, Callable[[Any], list[Any]]]:
        if self.kind == "members":

            async def members(s: AsyncSession, after: Any) -> Sequence[Any]:
                return await repo.export_members(s, self.path, after)

            return members, _member_row
        if self.kind == "contributions":

            async def contributions(s: AsyncSession, after: Any) -> Sequence[Any]:
                return await repo.export_contributions(
                    s, self.path, status=self.status, first=self.first, last=self.last, after=after
                )

            return contributions, _contribution_row
        starts = local_midnight(self.first) if self.first else None
        ends = local_midnight(self.last + timedelta(days=1)) if self.last else None

        async def attendance(s: AsyncSession, after: Any) -> Sequence[Any]:
            return await repo.export_attendance(s, self.path, starts=starts, ends=ends, after=after)

        return attendance, _attendance_row


async def _rows(
    factory: async_sessionmaker[AsyncSession], query: ExportQuery
) -> AsyncIterator[list[list[Any]]]:
    fetch, shape = query.fetcher()
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with factory() as session:
            chunk = await fetch(session, after)
            await session.rollback()
        if not chunk:
            return
        yield [[safe(v) for v in shape(r)] for r in chunk]
        if len(chunk) < repo.EXPORT_CHUNK:
            return
        after = (chunk[-1].created_at, chunk[-1].id)


async def csv_stream(
    factory: async_sessionmaker[AsyncSession], query: ExportQuery
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADERS[query.kind])
    yield "\ufeff".encode() + buffer.getvalue().encode()
    async for chunk in _rows(factory, query):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(chunk)
        yield buffer.getvalue().encode()


async def xlsx_stream(
    factory: async_sessionmaker[AsyncSession], query: ExportQuery
) -> AsyncIterator[bytes]:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(TITLES[query.kind])
    sheet.append(HEADERS[query.kind])

    def append(rows: list[list[Any]]) -> None:
        for row in rows:
            sheet.append(row)

    fd, name = tempfile.mkstemp(prefix="quyu-export-", suffix=".xlsx")
    os.close(fd)
    try:
        async for chunk in _rows(factory, query):
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
