"""PostgreSQL: named queries from ``sql/queries.sql``, versioned migrations, the market registry.

Migrations are ``sql/migrations/NNNN_name.sql``, applied in order, each in its own transaction
together with its row in ``schema_migrations``; an advisory lock keeps two processes from
migrating at once.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import asyncpg

from infra.markets import Market, Prefecture, load_markets, load_prefectures

SQL_DIR = Path(__file__).parent / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
MIGRATION_LOCK = 724_201  # any constant shared by every migrating process


@cache
def queries() -> dict[str, str]:
    """Named queries: ``-- name: x`` starts query ``x``."""
    text = (SQL_DIR / "queries.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def q(name: str) -> str:
    return queries()[name]


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        found.append((int(version), name, path.read_text()))
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations not yet applied; return their versions."""
    await conn.execute(q("create_migrations_table"))
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        done = {r["version"] for r in await conn.fetch(q("applied_migrations"))}
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(q("record_migration"), version, name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def ensure_database(dsn: str) -> None:
    """Create the DSN's database if it does not exist (connecting through ``postgres``)."""
    name = dsn.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def load_registry(
    conn: asyncpg.Connection,
    prefectures: list[Prefecture] | None = None,
    markets: list[Market] | None = None,
) -> int:
    """Upsert the prefectures and markets from the shipped data files; return market count."""
    prefs = prefectures if prefectures is not None else load_prefectures()
    mkts = markets if markets is not None else load_markets()
    async with conn.transaction():
        await conn.executemany(
            q("upsert_prefecture"),
            [(p.code, p.name_zh, p.name_en, p.seat_lon, p.seat_lat, p.population_m) for p in prefs],
        )
        await conn.executemany(
            q("upsert_market"),
            [
                (m.market_id, m.kind, m.name_zh, m.name_en, m.prefecture_code, m.lon, m.lat)
                for m in mkts
            ],
        )
    return len(mkts)


async def market_places(dsn: str) -> dict[str, tuple[float, float]]:
    """Every market's (lon, lat), for the consumers to validate and place requests."""
    conn = await asyncpg.connect(dsn)
    try:
        return {r["market_id"]: (r["lon"], r["lat"]) for r in await conn.fetch(q("market_places"))}
    finally:
        await conn.close()


async def prepare(dsn: str) -> int:
    """Database, schema and registry, ready: what ``gig-stack up`` and the tests call."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        return await load_registry(conn)
    finally:
        await conn.close()
