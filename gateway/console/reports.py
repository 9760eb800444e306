"""The console's reports routes (see ``gateway.console``)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/console", tags=["console"])
