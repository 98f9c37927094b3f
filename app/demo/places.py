"""Demo places: the organizations of the source text (two districts; under one a street, a
regional party organization and its enterprises, under the other a street and a commercial
buildings committee with its buildings) and the activities they host.

Organizations and activities are named by a key, which the loader (`app.demo.loader`) turns
into a fixed id.  Sign-ups name members by their position in `app.demo.people.MEMBERS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time

from app.models.activity import ActivityStatus


@dataclass(frozen=True)
class OrgSpec:
    key: str
    name: str
    kind: str
    level: str
    parent: str | None = None  # the parent's key; None for a root
    region_type: str | None = None
    founding_form: str | None = None
    address: str | None = None
    lat: float | None = None
    lng: float | None = None


ORGS: list[OrgSpec] = [
    OrgSpec("fenghua", "中共宁波市奉化区委员会", "district", "committee", address="宁波市奉化区"),
    OrgSpec(
        "xiwu",
        "中共奉化区西坞街道工作委员会",
        "street",
        "committee",
        "fenghua",
        address="宁波市奉化区西坞街道",
        lat=29.7005,
        lng=121.4512,
    ),
    OrgSpec(
        "libang",
        "中共奉化区西坞街道力邦村总支部委员会",
        "regional",
        "general_branch",
        "xiwu",
        region_type="migrant_residence",
        founding_form="village_firm",
        address="宁波市奉化区西坞街道力邦村",
        lat=29.6931,
        lng=121.4588,
    ),
    OrgSpec(
        "libang-machinery",
        "宁波力邦机械有限公司党支部",
        "enterprise",
        "branch",
        "libang",
        address="奉化区西坞街道力邦工业区1号",
        lat=29.6925,
        lng=121.4601,
    ),
    OrgSpec(
        "xiwu-textile",
        "奉化西坞纺织有限公司党支部",
        "enterprise",
        "branch",
        "libang",
        address="奉化区西坞街道力邦工业区8号",
        lat=29.6940,
        lng=121.4570,
    ),
    OrgSpec(
        "libang-electric",
        "宁波力邦电器有限公司党支部",
        "enterprise",
        "branch",
        "libang",
        address="奉化区西坞街道力邦工业区15号",
        lat=29.6918,
        lng=121.4622,
    ),
    OrgSpec("haishu", "中共宁波市海曙区委员会", "district", "committee", address="宁波市海曙区"),
    OrgSpec(
        "nanmen",
        "中共海曙区南门街道工作委员会",
        "street",
        "committee",
        "haishu",
        address="宁波市海曙区南门街道",
        lat=29.8676,
        lng=121.5480,
    ),
    OrgSpec(
        "haishu-buildings",
        "中共海曙区商务楼宇联合委员会",
        "regional",
        "committee",
        "nanmen",
        region_type="commercial_building",
        founding_form="trade",
        address="宁波市海曙区药行街天一广场",
        lat=29.8700,
        lng=121.5530,
    ),
    OrgSpec(
        "tianyi-tower",
        "天一广场写字楼党支部",
        "building",
        "branch",
        "haishu-buildings",
        address="海曙区药行街188号",
        lat=29.8703,
        lng=121.5538,
    ),
    OrgSpec(
        "heyi-tower",
        "和义大道商务楼党支部",
        "building",
        "branch",
        "haishu-buildings",
        address="海曙区和义路66号",
        lat=29.8745,
        lng=121.5555,
    ),
]


@dataclass(frozen=True)
class ActivitySpec:
    """An activity `days` ahead of the day the demo data is loaded, at `at` local time, at
    its host organization's location."""

    key: str
    org: str
    title: str
    category: str
    days: int
    at: time
    hours: float
    place: str
    capacity: int | None
    visibility: str
    service_hours: float
    post: str
    status: str = ActivityStatus.published.value
    signups: tuple[int, ...] = field(default=())  # indexes into MEMBERS, confirmed


ACTIVITIES: list[ActivitySpec] = [
    ActivitySpec(
        "libang-study",
        "libang",
        "主题党日：学习新修订的党章",
        "study",
        3,
        time(19, 0),
        2,
        "力邦村党群服务中心二楼",
        40,
        "region",
        2,
        "community",
        signups=(0, 1, 3),
    ),
    ActivitySpec(
        "libang-cleanup",
        "libang",
        "志愿服务：力邦村环境整治",
        "volunteer",
        5,
        time(8, 30),
        3,
        "力邦村文化广场",
        3,
        "public",
        3,
        "community",
        signups=(0, 1, 2),  # full: the next sign-up goes on the waitlist
    ),
    ActivitySpec(
        "buildings-meeting",
        "haishu-buildings",
        "商务楼宇党建联席会议",
        "coordination",
        2,
        time(14, 0),
        1.5,
        "天一广场党群服务中心",
        None,
        "org",
        1.5,
        "enterprise",
        signups=(10, 11),
    ),
    ActivitySpec(
        "buildings-lecture",
        "haishu-buildings",
        "微党课：数字经济与楼宇党建",
        "study",
        10,
        time(12, 30),
        1,
        "天一广场党群服务中心",
        60,
        "region",
        1,
        "enterprise",
        status=ActivityStatus.draft.value,
    ),
]

ACTIVITY_DESCRIPTION = "{place}。请提前十分钟到场签到。"
ACTIVITY_RADIUS_M = 300
