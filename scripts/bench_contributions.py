"""Benchmark (not a test): GET /orgs/{org_id}/stats and a secretary's pending queue page with
10k, 100k and 1M contributions on PostgreSQL.

    .venv/bin/python scripts/bench_contributions.py [--sizes 10000,100000,1000000]
        [--admin-dsn postgresql://postgres@127.0.0.1:5432/postgres] [--keep]

It creates a fresh database (quyu_bench_<pid>), migrates it with Alembic, seeds an organization
tree (1 district → 10 streets → 10 regional organizations each → 10 enterprises each: 1,111
organizations), 20,000 members approved across the enterprises, and then grows the
contributions table by COPY to each size in turn (ANALYZE after each step).  Requests go
through the whole app in-process (httpx ASGI transport: routing, auth, SQL, pydantic); each
figure is the median and the 95th percentile of 30 timed requests after 3 warm-up ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEMBERS = 20_000
RUNS = 30
WARMUP = 3


def _setup_env(url: str) -> None:
    os.environ.update(
        {
            "QUYU_ENV": "test",
            "QUYU_DATABASE_URL": url,
            "QUYU_JWT_SECRET": secrets.token_urlsafe(48),
            "QUYU_FIELD_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "QUYU_LOG_LEVEL": "WARNING",
        }
    )


def _path(*ids: uuid.UUID) -> str:
    return "/" + "/".join(i.hex for i in ids) + "/"


async def seed_tree(conn: object) -> dict[str, object]:
    """Organizations, members with approved check-ins, two secretaries."""
    import asyncpg

    assert isinstance(conn, asyncpg.Connection)
    now = datetime.now(UTC)
    orgs: list[tuple[object, ...]] = []
    district = uuid.uuid4()
    orgs.append((district, "海曙区", "district", "committee", None, _path(district), 0))
    enterprises: list[uuid.UUID] = []
    regionals: list[uuid.UUID] = []
    for s in range(10):
        street = uuid.uuid4()
        orgs.append(
            (street, f"街道{s}", "street", "committee", district, _path(district, street), 1)
        )
        for r in range(10):
            regional = uuid.uuid4()
            regionals.append(regional)
            rpath = _path(district, street, regional)
            orgs.append((regional, f"区域党委{s}-{r}", "regional", "committee", street, rpath, 2))
            for e in range(10):
                ent = uuid.uuid4()
                enterprises.append(ent)
                orgs.append(
                    (
                        ent,
                        f"企业支部{s}-{r}-{e}",
                        "enterprise",
                        "branch",
                        regional,
                        rpath + ent.hex + "/",
                        3,
                    )
                )
    await conn.copy_records_to_table(
        "organizations",
        records=[(*o, now, now) for o in orgs],
        columns=[
            "id",
            "name",
            "kind",
            "level",
            "parent_id",
            "path",
            "depth",
            "created_at",
            "updated_at",
        ],
    )
    users = [uuid.uuid4() for _ in range(MEMBERS + 2)]
    await conn.copy_records_to_table(
        "users",
        records=[
            (u, f"1{3 + i % 6}{i:09d}", f"党员{i}", False, True, "[]", now, now)
            for i, u in enumerate(users)
        ],
        columns=[
            "id",
            "phone",
            "name",
            "is_admin",
            "is_active",
            "skills",
            "created_at",
            "updated_at",
        ],
    )
    member_org = {u: enterprises[i % len(enterprises)] for i, u in enumerate(users[:MEMBERS])}
    await conn.copy_records_to_table(
        "checkins",
        records=[
            (uuid.uuid4(), u, o, "approved", i % 3 == 0, now, now, now)
            for i, (u, o) in enumerate(member_org.items())
        ],
        columns=[
            "id",
            "user_id",
            "org_id",
            "status",
            "floating",
            "decided_at",
            "created_at",
            "updated_at",
        ],
    )
    district_secretary, regional_secretary = users[MEMBERS], users[MEMBERS + 1]
    await conn.copy_records_to_table(
        "officers",
        records=[
            (uuid.uuid4(), district, district_secretary, "secretary", "hired", now, now),
            (uuid.uuid4(), regionals[0], regional_secretary, "secretary", "hired", now, now),
        ],
        columns=["id", "org_id", "user_id", "role", "appointed_by", "created_at", "updated_at"],
    )
    return {
        "district": district,
        "regional": regionals[0],
        "member_org": member_org,
        "district_secretary": district_secretary,
        "regional_secretary": regional_secretary,
    }


async def grow(conn: object, world: dict[str, object], start: int, stop: int) -> None:
    """COPY contributions number `start` .. `stop - 1` in batches of 100k."""
    import asyncpg

    assert isinstance(conn, asyncpg.Connection)
    member_org = world["member_org"]
    assert isinstance(member_org, dict)
    members = list(member_org.items())
    rng = random.Random(start)  # noqa: S311  (synthetic data)
    today = date.today()
    base = datetime.now(UTC) - timedelta(days=365)
    statuses = ["approved"] * 16 + ["pending"] * 2 + ["rejected", "returned", "withdrawn"][:2]
    for lo in range(start, stop, 100_000):
        hi = min(stop, lo + 100_000)
        rows = []
        for i in range(lo, hi):
            user, org = members[rng.randrange(len(members))]
            created = base + timedelta(seconds=i * 31_536_000 / 1_000_000)
            status = statuses[rng.randrange(len(statuses))]
            rows.append(
                (
                    uuid.uuid4(),
                    user,
                    org,
                    "community" if i % 3 else "enterprise",
                    "volunteering" if i % 3 else "safety",
                    f"事项{i}",
                    today - timedelta(days=rng.randrange(365)),
                    1 + rng.randrange(8),
                    status,
                    "manual",
                    False,
                    0,
                    created,
                    created if status != "pending" else None,
                    created,
                    created,
                )
            )
        await conn.copy_records_to_table(
            "contributions",
            records=rows,
            columns=[
                "id",
                "user_id",
                "org_id",
                "post",
                "category",
                "title",
                "occurred_on",
                "half_hours",
                "status",
                "source",
                "possible_duplicate",
                "attachment_count",
                "submitted_at",
                "decided_at",
                "created_at",
                "updated_at",
            ],
        )
    await conn.execute("ANALYZE")


async def timed(client: object, url: str, headers: dict[str, str]) -> tuple[float, float]:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    samples: list[float] = []
    for i in range(WARMUP + RUNS):
        started = time.perf_counter()
        r = await client.get(url, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert r.status_code == 200, r.text
        if i >= WARMUP:
            samples.append(elapsed)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import asyncpg

    name = f"quyu_bench_{os.getpid()}"
    base_dsn = args.admin_dsn.rsplit("/", 1)[0]
    url = base_dsn.replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        _setup_env(url)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            check=True,
            env=os.environ,
            capture_output=True,
        )
        conn = await asyncpg.connect(f"{base_dsn}/{name}")
        t = time.perf_counter()
        world = await seed_tree(conn)
        print(f"tree and {MEMBERS} members seeded in {time.perf_counter() - t:.1f}s")

        import httpx

        from app.config import get_settings
        from app.core.tokens import issue_access_token
        from app.main import create_app

        get_settings.cache_clear()
        headers: dict[str, dict[str, str]] = {}
        for who in ("district_secretary", "regional_secretary"):
            session_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO user_sessions (id, user_id, created_at, last_used_at, expires_at,"
                " auth_method) VALUES ($1, $2, now(), now(), now() + interval '1 day', 'password')",
                session_id,
                world[who],
            )
            token, _ = issue_access_token(
                kind="user", subject=str(world[who]), session_id=session_id
            )
            headers[who] = {"Authorization": f"Bearer {token}"}

        app = create_app(configure_logs=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b/api/v1") as client:
                have = 0
                print(
                    "| rows | stats, district (1,111 orgs) | stats, one regional (11 orgs) |"
                    " pending queue page, district | pending queue page, regional |"
                )
                print("|---|---|---|---|---|")
                for size in sizes:
                    t = time.perf_counter()
                    await grow(conn, world, have, size)
                    have = size
                    print(f"<!-- grown to {size} in {time.perf_counter() - t:.1f}s -->")
                    year = date.today().year
                    cells = []
                    for who, org in (
                        ("district_secretary", world["district"]),
                        ("regional_secretary", world["regional"]),
                    ):
                        url_stats = f"/orgs/{org}/stats?from={year - 1}-01-01&to={year}-12-31"
                        cells.append(await timed(client, url_stats, headers[who]))
                    for who, org in (
                        ("district_secretary", world["district"]),
                        ("regional_secretary", world["regional"]),
                    ):
                        url_queue = f"/orgs/{org}/contributions?status=pending&limit=20"
                        cells.append(await timed(client, url_queue, headers[who]))
                    print(
                        f"| {size:,} | "
                        + " | ".join(f"{m:.1f} ms (p95 {p:.1f})" for m, p in cells)
                        + " |",
                        flush=True,
                    )
        await conn.close()
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
