"""Gateway fixtures: a gateway on a free loopback port over the session's real services, a
recording sink to see what it publishes, and tokens signed with the test's own secret."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from playwright.async_api import Browser, Page, async_playwright
from pydantic import SecretStr
from redis.asyncio import Redis

from gateway import auth
from gateway.serve import Running, serving
from gateway.service import Sink
from infra.publish import Outgoing
from infra.settings import Settings

MARKET = "G4301001"
OTHER_MARKET = "G4301002"


@dataclass
class Recording:
    """Passes messages on to the real sink and keeps a copy."""

    inner: Sink
    sent: list[Outgoing] = field(default_factory=list)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self.sent.extend(messages)
        await self.inner.publish(messages)


def with_gateway(settings: Settings) -> Settings:
    """Settings with a secret of the test's own, a fresh group and development login."""
    slice_ = settings.gateway.model_copy(
        update={
            "secret": SecretStr(secrets.token_urlsafe(32)),
            "group": f"gateway-{uuid.uuid4().hex[:8]}",
            "dev_login": True,
            "port": 0,
        }
    )
    return settings.model_copy(update={"gateway": slice_})


def token(settings: Settings, role: auth.Role, subject: str, ttl_s: int = 600) -> str:
    secret = auth.resolve_secret(settings.gateway)
    return auth.issue_token(secret, role, subject, int(time.time()), ttl_s)


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return with_gateway(settings)


@pytest.fixture
async def gateway(gw_settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    """A running gateway and what it publishes."""
    async with serving(gw_settings) as running:
        recording = Recording(running.gateway.sink)
        running.gateway.sink = recording
        yield running, recording


def module_settings(base: Settings, tag: str) -> Settings:
    """Gateway settings for a module whose tests share one gateway (each uses ids of its
    own), under a key prefix of its own."""
    prefix = f"{base.key_prefix}{tag}{uuid.uuid4().hex[:6]}"
    return with_gateway(base.model_copy(update={"key_prefix": prefix}))


@contextlib.asynccontextmanager
async def module_gateway(settings: Settings) -> AsyncIterator[tuple[Running, Recording]]:
    """A gateway and what it publishes; its Redis keys are deleted afterwards."""
    async with serving(settings) as running:
        recording = Recording(running.gateway.sink)
        running.gateway.sink = recording
        yield running, recording
    redis = Redis.from_url(settings.redis_url)
    async for key in redis.scan_iter(match=f"{settings.key_prefix}:*"):
        await redis.delete(key)
    await redis.aclose()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# --- Chromium, for the pages ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium (Debian's); each context gets a fresh temporary profile."""
    if not shutil.which(CHROMIUM):
        pytest.skip("Chromium is not installed (make system-deps installs it)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def snap(page: Page, name: str, full_page: bool = True) -> None:
    """A screenshot for the docs when GIG_SCREENSHOTS names a directory."""
    if folder := os.environ.get("GIG_SCREENSHOTS"):
        await page.screenshot(path=f"{folder}/{name}.png", full_page=full_page)
