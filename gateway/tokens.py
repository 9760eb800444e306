"""``gig-token``: credentials for trying the gateway, signed with the gateway's secret.

    gig-token worker W-demo-1          # a worker's token
    gig-token station G4301001         # the station's key, and a token for it
    gig-token supervisor audit         # a supervisor's (read-only) token

The secret comes from settings (``GIG_GATEWAY__SECRET``) or, in development, from
``.stack/gateway-secret``, the same place the gateway reads it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gateway import auth
from infra.settings import Settings, get_settings


def credentials(settings: Settings, role: auth.Role, subject: str, ttl_s: int | None) -> str:
    """The lines to print: the token, and for a station its key too."""
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
    args = p.parse_args(argv)
    ttl = int(args.ttl_h * 3600) if args.ttl_h else None
    print(credentials(get_settings(), args.role, args.subject, ttl))
    sys.exit(0)


if __name__ == "__main__":
    main()
