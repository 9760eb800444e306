"""An event store of the test's own: a fresh database, migrated, with the market registry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra import pg
from infra.settings import Settings


async def fresh_archive(settings: Settings) -> AsyncIterator[Settings]:
    base = settings.pg_dsn.rsplit("/", 1)[0]
    name = f"gig_test_replay_{uuid.uuid4().hex[:8]}"
    await pg.prepare(f"{base}/{name}")
    try:
        yield settings.model_copy(update={"pg_dsn": f"{base}/{name}"})
    finally:
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def archived(settings: Settings) -> AsyncIterator[Settings]:
    """Per-test settings whose PostgreSQL database is a fresh, empty event store."""
    async for s in fresh_archive(settings):
        yield s
