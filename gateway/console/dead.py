"""The console's dead letters (see ``gateway.console``): the list with reasons and filters,
one letter, and an operator's requeue, audited on the log. The logic is ``archive.dead``
(shared with ``gig-dead``); here are the routes, their bounds and their refusals.

- ``GET  /api/v1/console/dead-letters?consumer=&source_topic=&reason=&from=&to=&limit=``
- ``GET  /api/v1/console/dead-letters/{id}``
- ``POST /api/v1/console/dead-letters/{id}/requeue``  (operators only; body ``{force, note}``)

A requeue is refused with 409 and the reason (not whole, not an inbound topic, the request
already ended, requeued before and not forced), 404 for a letter the archive does not hold.
"""

from __future__ import annotations

import logging
from typing import Annotated, Final

from fastapi import Body, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from archive import dead
from gateway import auth
from gateway.console.deps import Deps, Supervisor, console_router
from schemas.events import EPOCH_MS_MAX, TEXT_MAX, DeadLetterRequeued

router = console_router()
log = logging.getLogger("gateway.console")

ID_RULE: Final = r"^[0-9]{1,9}:[0-9]{1,19}(:[0-9]{1,19})?$"
LetterIdPath = Annotated[
    str,
    Path(
        max_length=60,
        pattern=ID_RULE,
        description="partition:offset:time of the letter's record (or partition:offset)",
    ),
]


class RequeueBody(BaseModel):
    """An operator's requeue: ``force`` sends a letter requeued before again; ``note`` says
    why (it is kept in the audit)."""

    model_config = ConfigDict(extra="forbid")

    force: bool = False
    note: str = Field("", max_length=TEXT_MAX)


def _refused(e: dead.Refused) -> HTTPException:
    return HTTPException(e.status, e.reason)


def _letter_id(text: str) -> dead.LetterId:
    try:
        return dead.parse_id(text)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/dead-letters", response_model=dead.LetterList)
async def dead_letters(
    deps: Deps,
    _who: Supervisor,
    consumer: Annotated[str | None, Query(max_length=100)] = None,
    source_topic: Annotated[str | None, Query(max_length=249)] = None,
    reason: Annotated[
        str | None, Query(max_length=dead.REASON_FILTER_MAX, description="a phrase, any case")
    ] = None,
    from_ms: Annotated[int, Query(alias="from", ge=0, le=EPOCH_MS_MAX)] = 0,
    to_ms: Annotated[int, Query(alias="to", ge=0, le=EPOCH_MS_MAX)] = EPOCH_MS_MAX,
    limit: Annotated[int, Query(ge=1, le=dead.LIMIT_MAX)] = dead.LIMIT_DEFAULT,
) -> dead.LetterList:
    """Dead letters newest first, with their reasons, whether each can be requeued, its
    requeues, and how far behind the archive is."""
    if from_ms > to_ms:
        raise HTTPException(422, "from must not be after to")
    f = dead.Filters(consumer, source_topic, reason, from_ms, to_ms, limit)
    async with deps.pg.acquire() as conn:
        return await dead.list_letters(conn, f)


@router.get("/dead-letters/{letter_id}", response_model=dead.LetterDetail)
async def dead_letter(deps: Deps, _who: Supervisor, letter_id: LetterIdPath) -> dead.LetterDetail:
    """One letter, with the whole text it holds."""
    lid = _letter_id(letter_id)
    async with deps.pg.acquire() as conn:
        try:
            return await dead.show(conn, lid)
        except dead.Refused as e:
            raise _refused(e) from None


@router.post("/dead-letters/{letter_id}/requeue", response_model=DeadLetterRequeued)
async def requeue_dead_letter(
    deps: Deps,
    who: Supervisor,
    letter_id: LetterIdPath,
    body: Annotated[RequeueBody | None, Body()] = None,
) -> DeadLetterRequeued:
    """Put the letter's message back on its source topic with its key (operators only); the
    answer is the audit record published on the operator-actions topic."""
    auth.must_operate(who)
    ask = body or RequeueBody()
    lid = _letter_id(letter_id)
    async with deps.pg.acquire() as conn:
        try:
            done = await dead.requeue(
                deps.settings, conn, deps.publisher,
                dead.Ask(lid, who.subject, ask.force, ask.note),
            )  # fmt: skip
        except dead.Refused as e:
            raise _refused(e) from None
        except dead.Unaudited as e:
            log.error("%s", e)
            raise HTTPException(500, str(e)) from None
    log.info(
        "operator %s requeued dead letter %s to %s[%d]@%d%s",
        who.subject, done.letter_id, done.source_topic, done.partition, done.offset,
        " (forced)" if done.forced else "",
    )  # fmt: skip
    return done
