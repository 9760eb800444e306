"""``gig-token``: credentials for trying the gateway, signed with the gateway's secret.

    gig-token worker W-demo-1          # a worker's token
    gig-token station G4301001         # a token for the station (its key on stderr)
    gig-token station G4301001 --key   # the station's key, for gig-kiosk --key
    gig-token supervisor audit         # a supervisor's (read-only) token

stdout holds only the bare token (or key), so ``T=$(gig-token --dev worker W-1)`` works; what
it is and how long it lasts go to stderr. The secret comes from settings
(``GIG_GATEWAY__SECRET``) or, with ``--dev`` (or ``GIG_GATEWAY__DEV_SECRET=true``), from
``.stack/gateway-secret``, the development secret ``make serve`` uses.
Subjects must be valid ids; nothing is issued for anything else.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway import auth
from infra.process import run_cli
from infra.settings import Settings, get_settings


@dataclass(frozen=True, slots=True)
class Issued:
    """A token, and for a station its key too."""

    token: str
    key: str | None
    ttl_s: int


def credentials(settings: Settings, role: auth.Role, subject: str, ttl_s: int | None) -> Issued:
    """A token for ``subject``, and for a station its key.

    ``ValueError`` for a subject that is not a valid id, ``auth.SecretError`` without a secret.
    """
    if not auth.valid_subject(subject):
        raise ValueError(f"not a valid id: {subject[:40]!r} (letters, digits, _ . : -; 1-140)")
    secret = auth.resolve_secret(settings.gateway)
    ttl = ttl_s or settings.gateway.token_ttl_s
    token = auth.issue_token(secret, role, subject, int(time.time()), ttl)
    key = auth.station_key(secret, subject) if role == "station" else None
    return Issued(token, key, ttl)


def _print(args: argparse.Namespace, issued: Issued) -> int:
    """The bare token (or key) on stdout; what it is on stderr."""
    if args.key:
        if issued.key is None:
            raise ValueError("--key is for stations: only a station has a key")
        print(issued.key)
        print(f"station key / 驿站密钥 of {args.subject}", file=sys.stderr)
        return 0
    print(issued.token)
    hours = f"{issued.ttl_s / 3600:g} h"
    print(f"token / 令牌: {args.role} {args.subject}, valid {hours}", file=sys.stderr)
    if issued.key is not None:
        print(f"station key / 驿站密钥: {issued.key} (bare: --key)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-token``."""
    p = argparse.ArgumentParser(prog="gig-token", description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=auth.ROLES)
    p.add_argument("subject", help="worker id, market id (station) or supervisor name")
    p.add_argument("--ttl-h", type=float, help="hours the token is valid (settings default)")
    p.add_argument("--dev", action="store_true", help="use the development secret in .stack/")
    p.add_argument("--key", action="store_true", help="print the station's key, not a token")
    args = p.parse_args(argv)
    ttl = int(args.ttl_h * 3600) if args.ttl_h else None
    settings = get_settings()
    if args.dev:
        gw = settings.gateway.model_copy(update={"dev_secret": True})
        settings = settings.model_copy(update={"gateway": gw})
    # ValueError: an invalid id or --key for a non-station; SecretError is one too.
    run_cli("gig-token", lambda: _print(args, credentials(settings, args.role, args.subject, ttl)),
            expected=(ValueError,))  # fmt: skip


if __name__ == "__main__":
    main()
