"""Schemathesis against the gateway's own OpenAPI document, on a real gateway (real Kafka,
Redis and PostgreSQL): every operation is called with generated valid and invalid input and a
valid token for its role, and must never answer 5xx, answer only the statuses it documents,
with the documented content type and body schema.

The gateway runs in a thread with its own event loop: schemathesis's pytest tests are
synchronous and call it over HTTP. The document is made offline at collection, since
schemathesis 4.32's lazy loader (``from_fixture``) fails under pytest 9.2 (it sets the removed
``Node._nodeid``). Examples are bounded and the seed fixed, so the run is the
same every time.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway import auth
from gateway.app import create_app
from gateway.serve import serving
from infra.settings import Settings
from tests.gateway.conftest import MARKET, token, with_gateway

pytestmark = [
    pytest.mark.integration,
    # schemathesis 4.32 draws from ``random`` inside its strategies; Hypothesis warns of it.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]
EXAMPLES = 30  # per operation, in the fuzzing phase
SEED = 20_251_127
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
WORKER = "W-fuzz"


class GatewayThread:
    """``serving(settings)`` in a thread of its own, until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-gateway", daemon=True)

    def start(self) -> str:
        self._thread.start()
        if not self.ready.wait(60) or self.error is not None:
            raise RuntimeError(f"the gateway did not start: {self.error!r}")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            self.error = e
            self.ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serving(self.settings) as running:
            self.url = running.url
            self.ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def fuzz_settings(base_settings: Settings) -> Settings:
    prefix = f"{base_settings.key_prefix}fuzz{uuid.uuid4().hex[:6]}"
    return with_gateway(base_settings.model_copy(update={"key_prefix": prefix}))


@pytest.fixture(scope="module")
def gateway_url(fuzz_settings: Settings) -> Iterator[str]:
    gateway = GatewayThread(fuzz_settings)
    try:
        yield gateway.start()
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def tokens(fuzz_settings: Settings, gateway_url: str) -> dict[str, str]:
    """A token per role: the station's from its station key, as a kiosk gets it."""
    key = auth.station_key(auth.resolve_secret(fuzz_settings.gateway), MARKET)
    login = requests.post(
        f"{gateway_url}/api/v1/auth/station", json={"market_id": MARKET, "key": key}, timeout=10
    )
    login.raise_for_status()
    return {
        "station": login.json()["token"],
        "worker": token(fuzz_settings, "worker", WORKER),
        "supervisor": token(fuzz_settings, "supervisor", "audit"),
    }


def offline_schema() -> Any:
    """The gateway's OpenAPI document, made without services (the served one is the same: see
    the first test), with the run's bounds."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": EXAMPLES, "mode": "all", "deterministic": True},
            "request-timeout": 10,
        }
    )
    document = create_app(Settings(_env_file=None)).openapi()
    return schemathesis.openapi.from_dict(document, config=config)


schema = offline_schema()


def test_the_served_document_is_the_one_fuzzed(gateway_url: str) -> None:
    served = requests.get(f"{gateway_url}/openapi.json", timeout=10).json()
    assert served == create_app(Settings(_env_file=None)).openapi()


def role_for(path: str) -> str:
    """Whose token the operation expects: kiosk routes a station's, worker routes a worker's,
    a worker's offers a supervisor's (any worker id), the rest a station's."""
    if path.startswith(("/api/v1/answers", "/api/v1/worker/")):
        return "worker"
    if path.startswith("/api/v1/workers/"):
        return "supervisor"
    return "station"


@schema.parametrize()  # type: ignore[untyped-decorator]
def test_the_gateway_keeps_to_its_openapi_document(
    case: Any, gateway_url: str, tokens: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {tokens[role_for(case.path)]}"}
    case.call_and_validate(base_url=gateway_url, headers=headers, checks=CHECKS, timeout=10)
