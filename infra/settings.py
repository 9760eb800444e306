"""One settings object, read once, frozen; every adapter gets its slice.

Every field can be set from the environment with the ``GIG_`` prefix (``GIG_REDIS_URL``,
``GIG_KAFKA_BOOTSTRAP``, ``GIG_POLICY__OFFER_TTL_S``) or from a ``.stack/env`` file written
by ``gig-stack up``. Tests build ``Settings(**overrides)`` directly.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The stack's state (broker jars and logs, Redis data, the env file) lives in the checkout's
# .stack/, found from the package's own location, never from the working directory: a command
# run from /tmp or from a subdirectory reads the same .stack/env (tests/unit/test_cli.py).
CHECKOUT = Path(__file__).resolve().parent.parent
STACK_DIR = Path(os.environ.get("GIG_STACK_DIR") or CHECKOUT / ".stack").resolve()
STACK_ENV_FILE = STACK_DIR / "env"


class PolicySettings(BaseModel):
    """Dispatch policy knobs; turned into a pure ``dispatch.model.Policy``."""

    model_config = ConfigDict(frozen=True)

    name: str = "greedy"
    offer_ttl_s: float = Field(15.0, gt=0)
    radii_km: tuple[float, ...] = (3.0, 6.0, 12.0, 25.0, 50.0)
    over_offer: float = Field(1.0, ge=1.0)
    search_count: int = Field(12, ge=1, le=500)
    retry_idle_s: float = Field(5.0, gt=0)
    # How far ahead of the dispatcher's clock a request's start or deadline may be, and how
    # far in the future a message's own time may lie (producers' clocks differ a little).
    max_horizon_s: float = Field(24 * 3600.0, gt=0)
    max_skew_s: float = Field(300.0, ge=0)


class KafkaSettings(BaseModel):
    """The broker and how the services use it. ``replication`` and ``min_insync`` apply to the
    topics ``ensure_topics`` creates; a three-broker stack sets them to 3 and 2."""

    model_config = ConfigDict(frozen=True)

    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(8, ge=1)
    replication: int = Field(1, ge=1)
    min_insync: int = Field(1, ge=1)
    fetch_max_wait_ms: int = Field(10, ge=1)
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_batch: int = Field(2000, ge=1)
    linger_ms: int = Field(2, ge=0)
    # Where a consumer group with no committed offset starts. Services start at the end:
    # replaying history is explicit (the replay tools). Tests whose topics are new use earliest.
    new_group_start: Literal["latest", "earliest"] = "latest"
    # How long joining a group may take before the service says so and tries again.
    join_timeout_s: float = Field(30.0, gt=0)


class GatewaySettings(BaseModel):
    """The push gateway and HTTP API (``gateway/``). Production sets ``GIG_GATEWAY__SECRET``
    (at least 32 bytes); only with ``dev_secret`` (``make serve``, the demo, tests) is a
    development secret generated once into ``.stack/gateway-secret`` when none is set."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    secret: SecretStr | None = None
    token_ttl_s: int = Field(12 * 3600, gt=0)
    group: str = "gig-gateway"
    dev_login: bool = False
    dev_secret: bool = False
    # A worker's socket frame larger than this is refused (close code 1009).
    ws_max_bytes: int = Field(4096, ge=256, le=1 << 20)


class MetricsSettings(BaseModel):
    """Where each service serves ``/healthz``, ``/readyz`` and Prometheus ``/metrics`` (0: not
    at all; the gateway serves them on its own HTTP port). A default port found taken (a
    second dispatcher on the host) is replaced by a free one, logged; ``--metrics-port`` on a
    service's command line must be free."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    dispatcher_port: int = Field(9101, ge=0, le=65535)
    presence_port: int = Field(9102, ge=0, le=65535)
    archiver_port: int = Field(9103, ge=0, le=65535)
    # How often each consumer measures its lag (end offsets minus its positions).
    lag_interval_s: float = Field(5.0, gt=0)
    # ``/readyz`` answers 503 while the consumer is more records than this behind.
    ready_max_lag: int = Field(10_000, ge=0)


class Settings(BaseSettings):
    """Everything the services need to know about their environment."""

    model_config = SettingsConfigDict(
        env_prefix="GIG_",
        env_nested_delimiter="__",
        env_file=STACK_ENV_FILE,
        extra="ignore",
        frozen=True,
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka: KafkaSettings = KafkaSettings()
    redis_url: str = "redis://127.0.0.1:6379/0"
    # True: ``redis_url`` names a seed node of a Redis Cluster (``gig-stack up --redis-cluster``
    # starts one on six ports from ``redis_cluster_port`` and writes both to .stack/env).
    redis_cluster: bool = False
    redis_cluster_port: int = Field(7001, ge=1, le=55535)
    key_prefix: str = "gig"
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/gig"
    policy: PolicySettings = PolicySettings()
    gateway: GatewaySettings = GatewaySettings()
    metrics: MetricsSettings = MetricsSettings()
    worker_buckets: int = Field(16384, ge=1)
    dispatcher_group: str = "gig-dispatcher"
    presence_group: str = "gig-presence"

    def kafka_slice(self) -> KafkaSettings:
        """Kafka settings with the bootstrap servers folded in."""
        return self.kafka.model_copy(update={"bootstrap": self.kafka_bootstrap})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
