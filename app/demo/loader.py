"""Loads the demo data (`app.demo.places`, `app.demo.people`) through the domains' own rules.

Every row has a deterministic id (uuid5 of a stable name) or a natural key and is inserted
only when missing, so that loading again changes nothing.  What the domains compute is not
written down here a second time:

- an organization's path is made by `app.orgs.tree.child_path`, as when one is created;
- a check-in is floating (流动党员) when the member's record organization lies outside the
  district of the organization checked in to (`app.orgs.tree.district_of` and
  `app.authz.path_within`, as the check-in service decides), and always when the record
  organization is one elsewhere;
- an activity's district is `district_of` its host; its seat and waitlist counters are
  counted from the sign-ups written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import path_within
from app.config import Settings
from app.core import clock
from app.core.passwords import hash_password_sync
from app.db.base import Base
from app.db.session import create_engine, create_sessionmaker, separate_transaction
from app.demo import people, places
from app.identity.api_clients import new_api_client
from app.models.activity import Activity, ActivityStatus, Signup, SignupStatus
from app.models.auth import ApiClient
from app.models.checkin import Checkin
from app.models.contribution import Contribution, ContributionStatus
from app.models.enums import CheckinStatus
from app.models.organization import Officer, Organization
from app.models.user import User
from app.orgs.tree import child_path, district_of

NAMESPACE = uuid.UUID("5b0c3f1e-8a53-4a8e-9a53-7175797500de")


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, name)


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


async def seed(settings: Settings, *, only_if_empty: bool = False) -> SeedResult:
    """`quyu seed-demo`: load the demo data in one transaction; with `only_if_empty`, only
    into a database without any account."""
    engine = create_engine(settings)
    factory = create_sessionmaker(engine)
    result = SeedResult()
    try:
        async with separate_transaction(
            factory, why="a command-line run has no request: all the demo data or none"
        ) as session:
            if only_if_empty and await _has_accounts(session):
                result.skipped = True
                return result
            password_hash = await anyio.to_thread.run_sync(
                hash_password_sync, settings.demo_password
            )
            await _Loader(session, result, password_hash, clock.now()).load()
    finally:
        await engine.dispose()
    return result


async def _has_accounts(session: AsyncSession) -> bool:
    return bool((await session.execute(select(func.count(User.id)))).scalar_one())


async def _add_missing(session: AsyncSession, row: Base, *found_by: ColumnElement[bool]) -> bool:
    """Add `row` unless a row matching `found_by` exists; True when it was added."""
    if (await session.execute(select(type(row)).where(*found_by).limit(1))).first() is not None:
        return False
    session.add(row)
    await session.flush()
    return True


class _Loader:
    """One load: the organizations, accounts and demo ids it has seen so far."""

    def __init__(
        self, session: AsyncSession, result: SeedResult, password_hash: str, now: datetime
    ) -> None:
        self.session = session
        self.result = result
        self.password_hash = password_hash
        self.now = now
        self.today = now.astimezone(clock.LOCAL_TZ).date()
        self.orgs: dict[str, Organization] = {}
        self.members: list[User] = []
        self.secretaries: dict[str, uuid.UUID] = {}  # org key -> the secretary's user id

    async def load(self) -> None:
        await self.organizations()
        await self.accounts()
        await self.checkins()
        await self.activities()
        await self.contributions()
        await self.client()

    async def organizations(self) -> None:
        for spec in places.ORGS:
            org_id = demo_id(f"org:{spec.key}")
            found = await self.session.get(Organization, org_id)
            if found is not None:
                self.orgs[spec.key] = found
                continue
            parent = self.orgs[spec.parent] if spec.parent else None
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
                path=child_path(parent.path if parent else None, org_id),
                depth=parent.depth + 1 if parent else 0,
            )
            self.session.add(org)
            await self.session.flush()
            self.result.organizations += 1
            self.orgs[spec.key] = org

    async def _user(self, phone: str, user: User) -> User:
        """The account with `phone`; `user` (with the demo id of that phone) when none."""
        found = (
            await self.session.execute(select(User).where(User.phone == phone))
        ).scalar_one_or_none()
        if found is not None:
            return found
        user.id = demo_id(f"user:{phone}")
        user.phone = phone
        user.password_hash = self.password_hash
        self.session.add(user)
        await self.session.flush()
        self.result.users += 1
        return user

    async def accounts(self) -> None:
        await self._user(people.ADMIN_PHONE, User(name=people.ADMIN_NAME, is_admin=True))
        for phone, (name, org_key) in people.SECRETARIES.items():
            org = self.orgs[org_key]
            secretary = await self._user(
                phone,
                User(
                    name=name,
                    party_status="full",
                    record_org_id=org.id,
                    post_title=people.SECRETARY_POST_TITLE,
                ),
            )
            self.secretaries[org_key] = secretary.id
            officer = Officer(
                id=demo_id(f"officer:{phone}:{org_key}"),
                org_id=org.id,
                user_id=secretary.id,
                role="secretary",
                appointed_by="seconded",
            )
            if await _add_missing(
                self.session,
                officer,
                Officer.org_id == org.id,
                Officer.user_id == secretary.id,
            ):
                self.result.officers += 1
        for i, spec in enumerate(people.MEMBERS):
            record_org = self.orgs[spec.record_org] if spec.record_org else None
            member = await self._user(
                people.member_phone(i),
                User(
                    name=spec.name,
                    party_status=spec.party_status,
                    employer=spec.employer,
                    gender=spec.gender,
                    record_org_id=record_org.id if record_org else None,
                    record_org_name=spec.record_org_name,
                ),
            )
            self.members.append(member)

    async def _floating(self, record_org: Organization | None, target: Organization) -> bool:
        """流动党员: the record organization lies outside the district of the target; one
        elsewhere (not in the tree) is outside by definition."""
        if record_org is None:
            return True
        district = await district_of(self.session, target.path)
        return not path_within(record_org.path, district.path)

    async def checkins(self) -> None:
        for spec, member in zip(people.MEMBERS, self.members, strict=True):
            target = self.orgs[spec.checkin_org]
            record_org = self.orgs[spec.record_org] if spec.record_org else None
            approved = spec.checkin_status == CheckinStatus.approved
            pending = spec.checkin_status == CheckinStatus.pending
            checkin = Checkin(
                id=demo_id(f"checkin:{member.phone}:{spec.checkin_org}"),
                user_id=member.id,
                org_id=target.id,
                status=spec.checkin_status,
                note=people.PENDING_CHECKIN_NOTE if pending else None,
                floating=await self._floating(record_org, target),
                decided_at=self.now if approved else None,
            )
            if await _add_missing(self.session, checkin, Checkin.id == checkin.id):
                self.result.checkins += 1

    async def activities(self) -> None:
        for spec in places.ACTIVITIES:
            activity_id = demo_id(f"activity:{spec.key}")
            if await self.session.get(Activity, activity_id) is not None:
                continue
            host = self.orgs[spec.org]
            assert host.lat is not None and host.lng is not None
            starts = datetime.combine(
                self.today + timedelta(days=spec.days), spec.at, clock.LOCAL_TZ
            )
            published = spec.status == ActivityStatus.published.value
            activity = Activity(
                id=activity_id,
                org_id=host.id,
                district_id=(await district_of(self.session, host.path)).id,
                title=spec.title,
                description=places.ACTIVITY_DESCRIPTION.format(place=spec.place),
                category=spec.category,
                starts_at=starts,
                ends_at=starts + timedelta(hours=spec.hours),
                location_name=spec.place,
                location_address=host.address,
                lat=host.lat,
                lng=host.lng,
                radius_m=places.ACTIVITY_RADIUS_M,
                capacity=spec.capacity,
                visibility=spec.visibility,
                service_hours=spec.service_hours,
                post=spec.post,
                status=spec.status,
                created_by=self.secretaries[spec.org],
                published_at=self.now if published else None,
            )
            self.session.add(activity)
            self.session.add_all(
                Signup(
                    id=demo_id(f"signup:{spec.key}:{i}"),
                    activity_id=activity_id,
                    user_id=self.members[i].id,
                    status=SignupStatus.confirmed.value,
                    created_at=self.now,
                    confirmed_at=self.now,
                )
                for i in spec.signups
            )
            await self.session.flush()
            await self._count_signups(activity)
            self.result.activities += 1

    async def _count_signups(self, activity: Activity) -> None:
        """The activity's counters, from its sign-ups as written."""
        rows = await self.session.execute(
            select(Signup.status, func.count())
            .where(Signup.activity_id == activity.id)
            .group_by(Signup.status)
        )
        counts = dict(rows.all())
        activity.confirmed_count = counts.get(SignupStatus.confirmed.value, 0)
        activity.waitlist_count = counts.get(SignupStatus.waitlisted.value, 0)
        await self.session.flush()

    async def contributions(self) -> None:
        for n, spec in enumerate(people.CONTRIBUTIONS):
            org_key = people.MEMBERS[spec.member].checkin_org
            decided = spec.status != ContributionStatus.pending.value
            contribution = Contribution(
                id=demo_id(f"contribution:{n}"),
                user_id=self.members[spec.member].id,
                org_id=self.orgs[org_key].id,
                post=spec.post,
                category=spec.category,
                title=spec.title,
                occurred_on=self.today - timedelta(days=spec.days_ago),
                half_hours=round(spec.hours * 2),
                status=spec.status,
                submitted_at=self.now,
                decided_at=self.now if decided else None,
                decided_by=self.secretaries[org_key] if decided else None,
                decision_comment=spec.comment,
            )
            if await _add_missing(self.session, contribution, Contribution.id == contribution.id):
                self.result.contributions += 1

    async def client(self) -> None:
        found = await self.session.execute(
            select(ApiClient.id).where(ApiClient.client_id == people.DEMO_CLIENT_ID)
        )
        if found.first() is not None:
            return
        self.session.add(
            await new_api_client(
                client_id=people.DEMO_CLIENT_ID,
                name=people.DEMO_CLIENT_NAME,
                secret=people.DEMO_CLIENT_SECRET,
                scopes=people.DEMO_CLIENT_SCOPES,
                row_id=demo_id(f"client:{people.DEMO_CLIENT_ID}"),
            )
        )
        await self.session.flush()
        self.result.clients += 1
