"""``gig-token``: credentials for trying the gateway, signed with the gateway's secret.

    gig-token worker W-demo-1          # a worker's token
    gig-token station G4301001         # the station's key, and a token for it
    gig-token supervisor audit         # a supervisor's (read-only) token

The secret comes from settings (``GIG_GATEWAY__SECRET``) or, with ``--dev`` (or
``GIG_GATEWAY__DEV_SECRET=true``), from ``.stack/gateway-secret``, the development secret
``make serve`` uses. Subjects must be valid ids; nothing is issued for anything else.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gateway import auth
from infra.settings import Settings, get_settings


def credentials(settings: Settings, role: auth.Role, subject: str, ttl_s: int | None) -> str:
    """The lines to print: the token, and for a station its key too.

    ``ValueError`` for a subject that is not a valid id, ``auth.SecretError`` without a secret.
    """
    if not auth.valid_subject(subject):
        raise ValueError(f"not a valid id: {subject[:40]!r} (letters, digits, _ . : -; 1-140)")
    secret = auth.resolve_secret(settings.gateway)
    ttl = ttl_s or settings.gateway.token_ttl_s
    token = auth.issue_token(secret, role, subject, int(time.time()), ttl)
    lines = []
    if role == "station":
        lines.append(f"station key / 驿站密钥: {auth.station_key(secret, subject)}")
    lines.append(f"token / 令牌 ({role} {subject}, {ttl // 3600} h): {token}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gig-token``."""
    p = argparse.ArgumentParser(prog="gig-token", description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=auth.ROLES)
    p.add_argument("subject", help="worker id, market id (station) or supervisor name")
    p.add_argument("--ttl-h", type=float, help="hours the token is valid (settings default)")
    p.add_argument("--dev", action="store_true", help="use the development secret in .stack/")
    args = p.parse_args(argv)
    ttl = int(args.ttl_h * 3600) if args.ttl_h else None
    settings = get_settings()
    if args.dev:
        gw = settings.gateway.model_copy(update={"dev_secret": True})
        settings = settings.model_copy(update={"gateway": gw})
    try:
        print(credentials(settings, args.role, args.subject, ttl))
    except ValueError as e:  # SecretError is one too
        sys.exit(f"gig-token: {e}")
    sys.exit(0)


if __name__ == "__main__":
    main()
