"""Who may do what: signed tokens, station credentials and the permission rules.

Rules, in one table (anything not listed is refused with 403):

============  ====================================  =======================================
role          reads                                 writes
============  ====================================  =======================================
station       its own market's requests             post and cancel its own market's requests
worker        its own offers                        answer its own offers, check in, go offline
supervisor    every request, every worker's offers, nothing
              the console (reports, dead letters)
operator      what a supervisor reads               requeue a dead letter (audited on the log)
============  ====================================  =======================================

Tokens are JWT (HS256) with ``sub`` (market id, worker id or supervisor name), ``role`` and
``exp``. A missing, expired or forged token is 401; a valid token asking for something its
role or subject does not allow is 403. A station proves who it is with its station key, an
HMAC of its market id under the gateway secret, and receives a token in exchange.

Refusals say as little as they can ("not allowed"): which rule refused is for the log, not for
the caller. Tokens are issued only for subjects that are valid ids, and a token naming
anything else is 401. The secret is at least 32 bytes; the gateway refuses to start without
one, and makes a development secret only when ``dev_secret`` says so.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import jwt
from pydantic import TypeAdapter, ValidationError

from infra.settings import STACK_DIR, GatewaySettings
from schemas.events import Id

Role = Literal["station", "worker", "supervisor", "operator"]
ROLES: Final[tuple[Role, ...]] = ("station", "worker", "supervisor", "operator")
READERS: Final = frozenset({"supervisor", "operator"})  # read everything
ALGORITHM: Final = "HS256"
DEV_SECRET_FILE: Final = STACK_DIR / "gateway-secret"
STATION_KEY_CHARS: Final = 24
MIN_SECRET_BYTES: Final = 32
NOT_ALLOWED: Final = "not allowed"
NOT_AUTHENTICATED: Final = "the token is missing or not valid"
_ID: Final[TypeAdapter[str]] = TypeAdapter(Id)


class SecretError(ValueError):
    """The gateway secret is missing or too weak; the gateway does not start."""


def valid_subject(subject: str) -> bool:
    """Whether ``subject`` is a valid id (a market, worker or supervisor name)."""
    try:
        _ID.validate_python(subject)
    except ValidationError:
        return False
    return True


class AuthError(Exception):
    """Refused: ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: Literal[401, 403], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its token says."""

    role: Role
    subject: str


def issue_token(secret: str, role: Role, subject: str, now_s: int, ttl_s: int) -> str:
    """A signed token for ``subject`` in ``role``, valid ``ttl_s`` seconds from ``now_s``.

    Raises ``ValueError`` for a subject that is not a valid id: no token names one."""
    if not valid_subject(subject):
        raise ValueError("the subject must be a valid id (letters, digits, _ . : -; 1-140)")
    claims = {"sub": subject, "role": role, "iat": now_s, "exp": now_s + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str | None, now_s: int | None = None) -> Principal:
    """The principal a token names, or ``AuthError(401)`` if it is missing, expired or forged."""
    if not token:
        raise AuthError(401, NOT_AUTHENTICATED)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_exp": now_s is None},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "the token has expired") from None
    except jwt.InvalidTokenError:
        raise AuthError(401, NOT_AUTHENTICATED) from None
    if now_s is not None and int(claims["exp"]) <= now_s:
        raise AuthError(401, "the token has expired")
    role, subject = claims.get("role"), claims["sub"]
    if role not in ROLES or not isinstance(subject, str) or not valid_subject(subject):
        raise AuthError(401, NOT_AUTHENTICATED)
    return Principal(role, subject)


def station_key(secret: str, market_id: str) -> str:
    """The station's own credential: an HMAC of its market id under the gateway secret."""
    mac = hmac.new(secret.encode(), f"station:{market_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:STATION_KEY_CHARS]


def check_station_key(secret: str, market_id: str, key: str) -> None:
    """Raise ``AuthError(401)`` unless ``key`` is the station key of ``market_id``."""
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500).
    given = key.encode(errors="replace")
    if not hmac.compare_digest(station_key(secret, market_id).encode(), given):
        raise AuthError(401, "wrong market id or station key")  # says neither which


# --- the permission rules -----------------------------------------------------------------


def may_write_market(who: Principal, market_id: str) -> None:
    """Post or cancel a request: only the market's own station."""
    if who.role != "station" or who.subject != market_id:
        raise AuthError(403, NOT_ALLOWED)


def may_read_market(who: Principal, market_id: str) -> None:
    """Read a request: its market's station, or a supervisor."""
    if who.role in READERS:
        return
    if who.role != "station" or who.subject != market_id:
        raise AuthError(403, NOT_ALLOWED)


def may_read_worker(who: Principal, worker_id: str) -> None:
    """See a worker's offers: the worker, or a supervisor."""
    if who.role in READERS or (who.role == "worker" and who.subject == worker_id):
        return
    raise AuthError(403, NOT_ALLOWED)


def must_supervise(who: Principal) -> None:
    """Read the console: a supervisor (read-only) or an operator."""
    if who.role not in READERS:
        raise AuthError(403, NOT_ALLOWED)


def must_operate(who: Principal) -> None:
    """Change something from the console (requeue a dead letter): an operator only."""
    if who.role != "operator":
        raise AuthError(403, NOT_ALLOWED)


def must_be_worker(who: Principal) -> str:
    """The worker id of a worker's token; 403 for any other role."""
    if who.role != "worker":
        raise AuthError(403, NOT_ALLOWED)
    return who.subject


# --- the secret ---------------------------------------------------------------------------


NO_SECRET: Final = (
    "no gateway secret: set GIG_GATEWAY__SECRET to at least 32 random bytes (for example "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or, for development "
    "only, GIG_GATEWAY__DEV_SECRET=true to use one generated into .stack/gateway-secret"
)


def check_secret(value: str) -> str:
    """``value`` if it is long enough to sign tokens with, else ``SecretError``."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the gateway secret is {len(value.encode())} bytes; at least {MIN_SECRET_BYTES} "
            "random bytes are needed (GIG_GATEWAY__SECRET)"
        )
    return value


def resolve_secret(gateway: GatewaySettings, dev_file: Path = DEV_SECRET_FILE) -> str:
    """The signing secret: from settings; else, only with ``dev_secret``, the development one
    in ``.stack/`` (made once). ``SecretError`` when there is none or it is too short."""
    if gateway.secret is not None:
        return check_secret(gateway.secret.get_secret_value())
    if not gateway.dev_secret:
        raise SecretError(NO_SECRET)
    if dev_file.exists():
        return check_secret(dev_file.read_text().strip())
    dev_file.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    dev_file.touch(mode=0o600)
    dev_file.write_text(value)
    return value
