"""The supervisors' console: a page (``/supervisor``) and its read-only API under
``/api/v1/console``, for the supervisor and operator roles.

Each part has a module of its own with an ``APIRouter`` named ``router``:

- ``province``: the province now (requests and workers per prefecture), request search and a
  request's timeline;
- ``reports``: the bureau's indicators per prefecture, county, market, skill and day or month,
  CSV export, and what-if replays side by side;
- ``dead``: dead letters with their reasons, and the operator's requeue.

They read the PostgreSQL archive (``ConsoleDeps.pg``), Redis and Kafka through
``ConsoleDeps``, made once in the gateway's lifespan.
"""
