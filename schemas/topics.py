"""Topic names and message keys, in one place.

Keys are chosen for order: everything about one request (the request, the answers to its
offers, its lifecycle) is keyed by request id, so it stays in one partition in order; a
worker's presence events and the offers pushed to them are keyed by worker id.
"""

from __future__ import annotations

from typing import Final

HIRE_REQUESTS: Final = "gig.hire-requests.v1"
WORKER_EVENTS: Final = "gig.worker-events.v1"
OFFER_RESPONSES: Final = "gig.offer-responses.v1"
OFFERS: Final = "gig.offers.v1"
REQUEST_EVENTS: Final = "gig.request-events.v1"
DEAD_LETTERS: Final = "gig.dead-letters.v1"
# Per dispatcher batch: the inputs it took and the clock it used (key: dispatcher instance),
# so a supervisor's replay reproduces its decisions exactly.
DISPATCH_JOURNAL: Final = "gig.dispatch-journal.v1"
# Compacted, keyed by request id: the latest saved state of each request (its version and the
# state as JSON), written with the events it implies. Redis's request store is rebuilt from it.
REQUEST_STATE: Final = "gig.request-state.v1"
# What operators did by hand (requeued a dead letter: who, which, what), so the log and the
# archive keep an audit of every change made outside the services. Key: the letter id.
OPERATOR_ACTIONS: Final = "gig.operator-actions.v1"

INBOUND: Final = (HIRE_REQUESTS, WORKER_EVENTS, OFFER_RESPONSES)
ALL_TOPICS: Final = (
    *INBOUND,
    OFFERS,
    REQUEST_EVENTS,
    DEAD_LETTERS,
    DISPATCH_JOURNAL,
    REQUEST_STATE,
    OPERATOR_ACTIONS,
)
# Topics whose log keeps the latest record per key rather than every record.
COMPACTED: Final = (REQUEST_STATE,)
