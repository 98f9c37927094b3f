"""What an export's spreadsheet says: its title, the Chinese headers of each kind, and one
line per row, with phone numbers masked, codes in Chinese, control characters removed and
formula-like text quoted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.contributions import categories
from app.core import clock
from app.core.crypto import mask_phone
from app.core.text import printable
from app.reports.repository import AttendanceLine, ContributionLine, MemberLine

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
    """Text a cell can hold: without the control characters a spreadsheet refuses (rows stored
    before input was checked for them may hold some), and quoted when a spreadsheet would take
    it for a formula (CSV/formula injection)."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _local(moment: datetime | None) -> str:
    return moment.astimezone(clock.LOCAL_TZ).strftime("%Y-%m-%d %H:%M") if moment else ""


def member_line(r: MemberLine) -> list[Any]:
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


def contribution_line(r: ContributionLine) -> list[Any]:
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


def attendance_line(r: AttendanceLine) -> list[Any]:
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
