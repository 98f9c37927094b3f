"""Demo data: the places of the source text, fixed accounts and a city client.

Every row has a deterministic id (uuid5 of a stable name) or a natural key, and is inserted
only when missing, so that running it again changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import anyio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core import clock
from app.core.passwords import hash_password_sync
from app.core.tokens import new_opaque
from app.db.base import Base
from app.db.session import create_engine, create_sessionmaker
from app.models.activity import Activity, ActivityStatus, Signup, SignupStatus
from app.models.auth import ApiClient
from app.models.checkin import Checkin
from app.models.contribution import Contribution, ContributionStatus
from app.models.organization import Officer, Organization
from app.models.user import User
from app.orgs.tree import district_of

NAMESPACE = uuid.UUID("5b0c3f1e-8a53-4a8e-9a53-7175797500de")

DEMO_CLIENT_ID = "city-demo"
DEMO_CLIENT_SECRET = "demo-city-secret"  # noqa: S105  (documented demo credential)
DEMO_CLIENT_SCOPES = "orgs:read stats:read"


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, name)


@dataclass(frozen=True)
class OrgSpec:
    key: str
    name: str
    kind: str
    level: str
    parent: str | None = None
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

ADMIN_PHONE = "13900000000"
SECRETARIES = {
    "13900000001": ("力邦书记", "libang"),
    "13900000002": ("楼宇书记", "haishu-buildings"),
}

# phone suffix -> (name, record org key or free text, employer, checked-in org key, status)
MEMBERS: list[tuple[str, str, str, str, str]] = [
    ("王建国", "libang-machinery", "宁波力邦机械有限公司", "libang", "approved"),
    ("李秀英", "xiwu-textile", "奉化西坞纺织有限公司", "libang", "approved"),
    ("张伟", "text:贵州省毕节市七星关区某村党支部", "宁波力邦机械有限公司", "libang", "approved"),
    ("刘洋", "text:四川省广安市某镇党委", "奉化西坞纺织有限公司", "libang", "approved"),
    ("陈静", "text:江西省上饶市某村党支部", "宁波力邦电器有限公司", "libang", "pending"),
    ("杨磊", "libang-electric", "宁波力邦电器有限公司", "libang-electric", "approved"),
    ("赵敏", "text:安徽省阜阳市某村党支部", "宁波力邦电器有限公司", "libang", "pending"),
    ("黄勇", "text:河南省信阳市某村党支部", "奉化西坞纺织有限公司", "libang", "pending"),
    ("周芳", "libang", "力邦村委会", "libang", "approved"),
    ("吴强", "text:湖南省邵阳市某村党支部", "宁波力邦机械有限公司", "libang", "approved"),
    ("徐丽", "tianyi-tower", "宁波天一科技有限公司", "haishu-buildings", "approved"),
    ("孙涛", "heyi-tower", "和义律师事务所", "haishu-buildings", "approved"),
    (
        "胡军",
        "text:浙江省温州市鹿城区某企业党支部",
        "宁波天一科技有限公司",
        "tianyi-tower",
        "approved",
    ),
    ("朱琳", "text:江苏省南京市某社区党委", "甬商咨询有限公司", "haishu-buildings", "pending"),
    ("高峰", "haishu-buildings", "海曙区商务楼宇服务中心", "haishu-buildings", "approved"),
    ("林娜", "text:福建省宁德市某村党支部", "和义律师事务所", "heyi-tower", "pending"),
    ("何斌", "fenghua", "奉化区机关", "libang", "approved"),
    ("郭婷", "text:山东省临沂市某村党支部", "宁波力邦机械有限公司", "libang", "approved"),
    ("马超", "nanmen", "南门街道社区服务中心", "haishu-buildings", "approved"),
    ("罗霞", "text:重庆市万州区某村党支部", "宁波天一科技有限公司", "haishu-buildings", "approved"),
]


def member_phone(i: int) -> str:
    return f"139000000{10 + i:02d}"


@dataclass(frozen=True)
class ActivitySpec:
    """An activity `days` ahead of the day the demo data is loaded, at `at` local time."""

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

# member index, post, category, title, days ago, hours, status, reviewer's comment
CONTRIBUTIONS: list[tuple[int, str, str, str, int, float, str, str | None]] = [
    (0, "enterprise", "technical_innovation", "改进冲压模具，减少废品率", 10, 4, "approved", None),
    (0, "community", "volunteering", "协助新居民办理居住登记", 3, 2, "pending", None),
    (1, "community", "elder_care", "看望村里独居老人", 5, 1.5, "pending", None),
    (2, "community", "patrol", "夜间治安巡逻", 7, 3, "pending", None),
    (3, "enterprise", "safety", "车间安全隐患排查", 12, 2, "returned", "请补充现场照片"),
    (9, "enterprise", "mentoring", "带教两名新入职员工", 8, 2, "approved", None),
    (10, "enterprise", "mentoring", "带教新入职员工", 4, 2, "pending", None),
    (11, "community", "mediation", "调解楼宇租户纠纷", 6, 1, "approved", None),
]


@dataclass
class SeedResult:
    organizations: int = 0
    users: int = 0
    officers: int = 0
    checkins: int = 0
    activities: int = 0
    contributions: int = 0
    clients: int = 0
    skipped: bool = False

    def __str__(self) -> str:
        if self.skipped:
            return "demo data: database already has accounts, nothing loaded"
        return (
            f"demo data: {self.organizations} organizations, {self.users} accounts, "
            f"{self.officers} officers, {self.checkins} check-ins, {self.activities} activities, "
            f"{self.contributions} contributions, {self.clients} clients added"
        )


async def _add_missing(session: AsyncSession, obj: Base, **lookup: Any) -> bool:
    model = type(obj)
    query = select(model)
    for name, value in lookup.items():
        query = query.where(getattr(model, name) == value)
    if (await session.execute(query.limit(1))).first() is not None:
        return False
    session.add(obj)
    await session.flush()
    return True


async def seed(settings: Settings, *, only_if_empty: bool = False) -> SeedResult:
    engine = create_engine(settings)
    factory = create_sessionmaker(engine)
    result = SeedResult()
    try:
        async with factory() as session, session.begin():
            if only_if_empty:
                users = (await session.execute(select(func.count(User.id)))).scalar_one()
                if users:
                    result.skipped = True
                    return result
            password_hash = await anyio.to_thread.run_sync(
                hash_password_sync, settings.demo_password
            )
            await _seed(session, result, password_hash)
    finally:
        await engine.dispose()
    return result


async def _seed(session: AsyncSession, result: SeedResult, password_hash: str) -> None:
    orgs: dict[str, Organization] = {}
    for spec in ORGS:
        org_id = demo_id(f"org:{spec.key}")
        parent = orgs[spec.parent] if spec.parent else None
        org = Organization(
            id=org_id,
            name=spec.name,
            kind=spec.kind,
            level=spec.level,
            region_type=spec.region_type,
            founding_form=spec.founding_form,
            address=spec.address,
            lat=spec.lat,
            lng=spec.lng,
            parent_id=parent.id if parent else None,
            path=(parent.path if parent else "/") + org_id.hex + "/",
            depth=(parent.depth + 1) if parent else 0,
        )
        if await _add_missing(session, org, id=org_id):
            result.organizations += 1
        orgs[spec.key] = org

    async def user(phone: str, name: str, **fields: Any) -> User:
        existing = (
            await session.execute(select(User).where(User.phone == phone))
        ).scalar_one_or_none()
        if existing is not None:
            return existing
        created = User(
            id=demo_id(f"user:{phone}"),
            phone=phone,
            name=name,
            password_hash=password_hash,
            **fields,
        )
        session.add(created)
        await session.flush()
        result.users += 1
        return created

    await user(ADMIN_PHONE, "系统管理员", is_admin=True)
    for phone, (name, org_key) in SECRETARIES.items():
        secretary = await user(
            phone,
            name,
            party_status="full",
            record_org_id=orgs[org_key].id,
            post_title="书记",
        )
        officer = Officer(
            id=demo_id(f"officer:{phone}:{org_key}"),
            org_id=orgs[org_key].id,
            user_id=secretary.id,
            role="secretary",
            appointed_by="seconded",
        )
        if await _add_missing(session, officer, org_id=officer.org_id, user_id=secretary.id):
            result.officers += 1

    now = clock.now()
    for i, (name, record, employer, checkin_org, status) in enumerate(MEMBERS):
        record_fields: dict[str, Any] = (
            {"record_org_name": record[5:]}
            if record.startswith("text:")
            else {"record_org_id": orgs[record].id}
        )
        member = await user(
            member_phone(i),
            name,
            party_status="probationary" if i % 7 == 3 else "full",
            employer=employer,
            gender="female" if i % 2 else "male",
            **record_fields,
        )
        target = orgs[checkin_org]
        record_org = orgs.get(record) if not record.startswith("text:") else None
        district_prefix = "/" + target.path.strip("/").split("/")[0] + "/"
        floating = record_org is None or not record_org.path.startswith(district_prefix)
        checkin = Checkin(
            id=demo_id(f"checkin:{member.phone}:{checkin_org}"),
            user_id=member.id,
            org_id=target.id,
            status=status,
            note="在力邦村居住，希望参加组织生活" if status == "pending" else None,
            floating=floating,
            decided_at=now if status == "approved" else None,
        )
        if await _add_missing(session, checkin, id=checkin.id):
            result.checkins += 1

    secretaries = {org_key: demo_id(f"user:{phone}") for phone, (_, org_key) in SECRETARIES.items()}
    await _seed_activities(session, result, orgs, secretaries, now)
    await _seed_contributions(session, result, secretaries, now)

    client = ApiClient(
        id=demo_id(f"client:{DEMO_CLIENT_ID}"),
        client_id=DEMO_CLIENT_ID,
        name="城市党建平台（演示）",
        secret_hash=await anyio.to_thread.run_sync(hash_password_sync, DEMO_CLIENT_SECRET),
        scopes=DEMO_CLIENT_SCOPES,
    )
    if await _add_missing(session, client, client_id=DEMO_CLIENT_ID):
        result.clients += 1


async def _seed_activities(
    session: AsyncSession,
    result: SeedResult,
    orgs: dict[str, Organization],
    secretaries: dict[str, uuid.UUID],
    now: datetime,
) -> None:
    today = now.astimezone(clock.LOCAL_TZ).date()
    for spec in ACTIVITIES:
        host = orgs[spec.org]
        assert host.lat is not None and host.lng is not None
        starts = datetime.combine(today + timedelta(days=spec.days), spec.at, clock.LOCAL_TZ)
        published = spec.status == ActivityStatus.published.value
        activity = Activity(
            id=demo_id(f"activity:{spec.key}"),
            org_id=host.id,
            district_id=(await district_of(session, host.path)).id,
            title=spec.title,
            description=f"{spec.place}。请提前十分钟到场签到。",
            category=spec.category,
            starts_at=starts,
            ends_at=starts + timedelta(hours=spec.hours),
            location_name=spec.place,
            location_address=host.address,
            lat=host.lat,
            lng=host.lng,
            radius_m=300,
            capacity=spec.capacity,
            visibility=spec.visibility,
            service_hours=spec.service_hours,
            post=spec.post,
            status=spec.status,
            confirmed_count=len(spec.signups),
            created_by=secretaries[spec.org],
            published_at=now if published else None,
        )
        if not await _add_missing(session, activity, id=activity.id):
            continue
        result.activities += 1
        session.add_all(
            Signup(
                id=demo_id(f"signup:{spec.key}:{i}"),
                activity_id=activity.id,
                user_id=demo_id(f"user:{member_phone(i)}"),
                status=SignupStatus.confirmed.value,
                created_at=now,
                confirmed_at=now,
            )
            for i in spec.signups
        )
    await session.flush()


async def _seed_contributions(
    session: AsyncSession, result: SeedResult, secretaries: dict[str, uuid.UUID], now: datetime
) -> None:
    today = now.astimezone(clock.LOCAL_TZ).date()
    for n, (i, post, category, title, days_ago, hours, status, comment) in enumerate(CONTRIBUTIONS):
        org_key = MEMBERS[i][3]
        decided = status != ContributionStatus.pending.value
        contribution = Contribution(
            id=demo_id(f"contribution:{n}"),
            user_id=demo_id(f"user:{member_phone(i)}"),
            org_id=demo_id(f"org:{org_key}"),
            post=post,
            category=category,
            title=title,
            occurred_on=today - timedelta(days=days_ago),
            half_hours=round(hours * 2),
            status=status,
            submitted_at=now,
            decided_at=now if decided else None,
            decided_by=secretaries[org_key] if decided else None,
            decision_comment=comment,
        )
        if await _add_missing(session, contribution, id=contribution.id):
            result.contributions += 1


async def create_client(settings: Settings, client_id: str, scopes: str, org_id: str | None) -> str:
    engine = create_engine(settings)
    factory = create_sessionmaker(engine)
    secret = new_opaque(32)
    try:
        async with factory() as session, session.begin():
            session.add(
                ApiClient(
                    client_id=client_id,
                    name=client_id,
                    secret_hash=await anyio.to_thread.run_sync(hash_password_sync, secret),
                    scopes=" ".join(sorted(set(scopes.split()))),
                    org_id=uuid.UUID(org_id) if org_id else None,
                )
            )
    finally:
        await engine.dispose()
    return secret
