-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES ($1, $2);

-- name: upsert_prefecture
INSERT INTO prefectures (code, name_zh, name_en, seat_lon, seat_lat, population_m)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (code) DO UPDATE SET
    name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en, seat_lon = EXCLUDED.seat_lon,
    seat_lat = EXCLUDED.seat_lat, population_m = EXCLUDED.population_m;

-- name: upsert_market
INSERT INTO markets (market_id, kind, name_zh, name_en, prefecture_code, lon, lat)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (market_id) DO UPDATE SET
    kind = EXCLUDED.kind, name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,
    prefecture_code = EXCLUDED.prefecture_code, lon = EXCLUDED.lon, lat = EXCLUDED.lat;

-- name: market_places
SELECT market_id, lon, lat FROM markets;

-- name: count_markets
SELECT kind, count(*) AS n FROM markets GROUP BY kind ORDER BY kind;

-- name: create_event_stage
CREATE TEMP TABLE IF NOT EXISTS event_stage (
    topic text, part integer, kafka_offset bigint, kafka_ts_ms bigint, key text,
    event_id text, type text, at_ms bigint, request_id text, worker_id text, market_id text,
    lon double precision, lat double precision, payload jsonb, raw bytea, error text
) ON COMMIT DELETE ROWS;

-- name: insert_staged_events
INSERT INTO event_log (topic, part, kafka_offset, kafka_ts_ms, key, event_id, type, at_ms,
                       request_id, worker_id, market_id, lon, lat, payload, raw, error)
SELECT topic, part, kafka_offset, kafka_ts_ms, key, event_id, type, at_ms,
       request_id, worker_id, market_id, lon, lat, payload, raw, error
FROM event_stage
ORDER BY topic, part, kafka_offset
ON CONFLICT ON CONSTRAINT event_log_record DO NOTHING;

-- name: upsert_archive_progress
INSERT INTO archive_progress (consumer, topic, part, next_offset, lag, newest_ts_ms, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (consumer, topic, part) DO UPDATE SET
    next_offset = GREATEST(archive_progress.next_offset, EXCLUDED.next_offset),
    lag = EXCLUDED.lag, newest_ts_ms = EXCLUDED.newest_ts_ms, updated_at = now();

-- name: archive_progress
SELECT consumer, topic, sum(lag) AS lag, max(newest_ts_ms) AS newest_ts_ms,
       max(updated_at) AS updated_at
FROM archive_progress GROUP BY consumer, topic ORDER BY consumer, topic;

-- name: count_events
SELECT topic, count(*) AS n, count(error) AS invalid, min(at_ms) AS first_ms,
       max(at_ms) AS last_ms
FROM event_log GROUP BY topic ORDER BY topic;

-- name: events_of_request
SELECT topic, part, kafka_offset, kafka_ts_ms, payload::text AS payload
FROM event_log
WHERE request_id = $1 AND error IS NULL
ORDER BY at_ms, id;

-- name: events_of_worker
SELECT topic, part, kafka_offset, kafka_ts_ms, payload::text AS payload
FROM event_log
WHERE error IS NULL AND at_ms BETWEEN $2 AND $3
  AND (worker_id = $1
       OR (type = 'WaveSent'
           AND payload -> 'candidates' @> jsonb_build_array(jsonb_build_object('worker_id', $1::text))))
ORDER BY at_ms, id;

-- name: events_of_market
WITH requests AS (
    SELECT DISTINCT request_id FROM event_log
    WHERE market_id = $1 AND type = 'HireRequested' AND at_ms BETWEEN $2 AND $3
)
SELECT topic, part, kafka_offset, kafka_ts_ms, payload::text AS payload
FROM event_log
WHERE error IS NULL
  AND (request_id IN (SELECT request_id FROM requests)
       OR (market_id = $1 AND topic = 'gig.worker-events.v1' AND at_ms BETWEEN $2 AND $3))
ORDER BY at_ms, id;

-- name: events_in_window
SELECT topic, part, kafka_offset, kafka_ts_ms, payload::text AS payload
FROM event_log
WHERE error IS NULL AND topic = ANY($3::text[]) AND at_ms BETWEEN $1 AND $2
ORDER BY at_ms, id;

-- name: dead_letters
-- The dead letters ($1: the dead-letter topic) matching the filters, newest first.
SELECT part, kafka_offset, kafka_ts_ms, payload::text AS payload, NULL::bytea AS raw
FROM event_log
WHERE topic = $1 AND type = 'DeadLetter' AND error IS NULL
  AND ($2::text IS NULL OR payload ->> 'consumer' = $2)
  AND ($3::text IS NULL OR payload ->> 'source_topic' = $3)
  AND ($4::text IS NULL OR strpos(lower(payload ->> 'reason'), lower($4)) > 0)
  AND at_ms BETWEEN $5 AND $6
ORDER BY at_ms DESC, id DESC
LIMIT $7;

-- name: raw_dead_letters
-- Letters the archive kept as bytes (their text holds \u0000, which jsonb refuses), by
-- record time ($2..$3); the caller decodes and filters them.
SELECT part, kafka_offset, kafka_ts_ms, NULL::text AS payload, raw
FROM event_log
WHERE topic = $1 AND payload IS NULL AND raw IS NOT NULL AND kafka_ts_ms BETWEEN $2 AND $3
ORDER BY kafka_ts_ms DESC, id DESC
LIMIT $4;

-- name: dead_letter_at
-- One record of the dead-letter topic by partition and offset ($4: its record time, or NULL
-- for the newest archived at that place).
SELECT part, kafka_offset, kafka_ts_ms, payload::text AS payload, raw
FROM event_log
WHERE topic = $1 AND part = $2 AND kafka_offset = $3 AND ($4::bigint IS NULL OR kafka_ts_ms = $4)
ORDER BY kafka_ts_ms DESC
LIMIT 1;

-- name: requeues_of_letters
-- The archived requeues ($1: the operator-actions topic) of some letters ($2: their ids).
SELECT payload::text AS payload
FROM event_log
WHERE topic = $1 AND type = 'DeadLetterRequeued' AND error IS NULL
  AND payload ->> 'letter_id' = ANY($2::text[])
ORDER BY at_ms, id;

-- name: request_ended
-- The first terminal event ($3: their types) of a request ($1) on the request-events topic ($2).
SELECT type FROM event_log
WHERE request_id = $1 AND topic = $2 AND type = ANY($3::text[]) AND error IS NULL
ORDER BY at_ms
LIMIT 1;

-- name: dead_letter_archive_lag
-- How far behind the most recently active archiver is on the dead-letter topic ($1).
SELECT consumer, sum(lag) AS lag, max(updated_at) AS updated_at
FROM archive_progress
WHERE topic = $1
GROUP BY consumer
ORDER BY max(updated_at) DESC
LIMIT 1;

-- name: lock_dead_letter
-- Held until the transaction ends: one requeue of a letter at a time, across processes.
SELECT pg_advisory_xact_lock(724202, hashtext($1));

-- name: report_request_events
-- The requests posted in a window ($1-$2, epoch ms) and the events of the types $3 about
-- them, whenever they happened (a request's outcome may come after the window closes).
WITH requests AS (
    SELECT DISTINCT request_id FROM event_log
    WHERE type = 'HireRequested' AND error IS NULL AND at_ms BETWEEN $1 AND $2
)
SELECT topic, part, kafka_offset, kafka_ts_ms, payload::text AS payload
FROM event_log
WHERE error IS NULL AND type = ANY($3::text[])
  AND request_id IN (SELECT request_id FROM requests)
  AND (type <> 'HireRequested' OR at_ms BETWEEN $1 AND $2)
ORDER BY at_ms, id;

-- name: report_checkins
-- Every worker check-in in a window ($1-$2, epoch ms): the job seekers.
SELECT topic, part, kafka_offset, kafka_ts_ms, payload::text AS payload
FROM event_log
WHERE error IS NULL AND type = 'WorkerCheckedIn' AND at_ms BETWEEN $1 AND $2
ORDER BY at_ms, id;

-- name: console_registry
-- The map's registry: every prefecture (seat and names) and market (kind, place, names).
SELECT m.market_id, m.kind, m.name_zh, m.name_en, m.prefecture_code, m.lon, m.lat,
       p.name_zh AS prefecture_zh, p.name_en AS prefecture_en, p.seat_lon, p.seat_lat
FROM markets m JOIN prefectures p ON p.code = m.prefecture_code
ORDER BY m.prefecture_code, m.market_id;

-- name: console_requests_by_market
-- The requests posted in a window ($1 <= at_ms < $2) per market and outcome: the type of each
-- one's first terminal event ($3: the types), '' while it has none (still open).
WITH posted AS (
    SELECT DISTINCT ON (request_id) request_id, market_id
    FROM event_log
    WHERE type = 'HireRequested' AND error IS NULL AND at_ms >= $1 AND at_ms < $2
    ORDER BY request_id, at_ms, id
), ended AS (
    SELECT DISTINCT ON (e.request_id) e.request_id, e.type
    FROM event_log e JOIN posted p ON p.request_id = e.request_id
    WHERE e.type = ANY($3::text[]) AND e.error IS NULL
    ORDER BY e.request_id, e.at_ms, e.id
)
SELECT p.market_id, coalesce(d.type, '') AS ended, count(*)::int AS n
FROM posted p LEFT JOIN ended d ON d.request_id = p.request_id
GROUP BY 1, 2;

-- name: console_workers_by_place
-- The workers active in a window ($1 <= at_ms < $2) by where they are and what holds them.
-- A worker's hold is read from their last event of the types $3 (within one instant, ranked
-- by $4, the timeline's order): 'busy' after WorkerAssigned or JobChanged 'arrived', 'offered'
-- after OfferMade or OfferAccepted, else free (an answer, a withdrawal, the job's end, a new
-- check-in). A free worker whose last check-in is not followed by going offline is
-- 'available'. Place: a held worker's request market; a free one's last check-in market, or
-- its position (rounded to 0.001°) when it checked in by position or moved since.
WITH hold AS (
    SELECT DISTINCT ON (worker_id) worker_id, type, request_id, market_id,
           payload ->> 'status' AS step
    FROM event_log
    WHERE error IS NULL AND worker_id IS NOT NULL AND type = ANY($3::text[])
      AND at_ms >= $1 AND at_ms < $2
    ORDER BY worker_id, at_ms DESC, ($4::int[])[array_position($3::text[], type)] DESC, id DESC
), online AS (
    SELECT DISTINCT ON (worker_id) worker_id, type = 'WorkerCheckedIn' AS online
    FROM event_log
    WHERE error IS NULL AND worker_id IS NOT NULL
      AND type IN ('WorkerCheckedIn', 'WorkerWentOffline') AND at_ms >= $1 AND at_ms < $2
    ORDER BY worker_id, at_ms DESC, id DESC
), place AS (
    SELECT DISTINCT ON (worker_id) worker_id, market_id, lon, lat
    FROM event_log
    WHERE error IS NULL AND worker_id IS NOT NULL
      AND type IN ('WorkerCheckedIn', 'WorkerLocated') AND at_ms >= $1 AND at_ms < $2
    ORDER BY worker_id, at_ms DESC, id DESC
), state AS (
    SELECT coalesce(h.worker_id, o.worker_id) AS worker_id, h.request_id, h.market_id AS held_at,
           CASE WHEN h.type = 'WorkerAssigned' OR (h.type = 'JobChanged' AND h.step = 'arrived')
                  THEN 'busy'
                WHEN h.type IN ('OfferMade', 'OfferAccepted') THEN 'offered'
                WHEN o.online THEN 'available'
                ELSE 'offline' END AS status
    FROM hold h FULL JOIN online o ON o.worker_id = h.worker_id
), placed AS (
    SELECT s.status,
           CASE WHEN s.status = 'available' THEN pl.market_id
                ELSE coalesce(s.held_at, r.market_id, pl.market_id) END AS market_id,
           pl.lon, pl.lat
    FROM state s
    LEFT JOIN place pl ON pl.worker_id = s.worker_id
    LEFT JOIN LATERAL (
        SELECT e.market_id FROM event_log e
        WHERE s.status <> 'available' AND s.held_at IS NULL AND e.request_id = s.request_id
          AND e.type = 'HireRequested' AND e.error IS NULL
        LIMIT 1
    ) r ON true
    WHERE s.status <> 'offline'
)
SELECT status, market_id,
       CASE WHEN market_id IS NULL THEN round(lon::numeric, 3)::float8 END AS lon,
       CASE WHEN market_id IS NULL THEN round(lat::numeric, 3)::float8 END AS lat,
       count(*)::int AS n
FROM placed
GROUP BY 1, 2, 3, 4;

-- name: console_search_requests
-- Requests by id ($1), market ($2), skill ($3), posted between $4 and $5 (epoch ms), newest
-- first, at most $8; each with its first terminal event ($6: the types) and, with $7, only
-- those whose outcome is that type ('' for the open ones); with their offers and assignments.
WITH posted AS (
    SELECT DISTINCT ON (request_id) request_id, market_id, at_ms, payload
    FROM event_log
    WHERE type = 'HireRequested' AND error IS NULL
      AND ($1::text IS NULL OR request_id = $1)
      AND ($2::text IS NULL OR market_id = $2)
      AND ($3::text IS NULL OR payload ->> 'skill' = $3)
      AND at_ms BETWEEN $4 AND $5
    ORDER BY request_id, at_ms, id
), found AS (
    SELECT p.request_id, p.market_id, p.at_ms, p.payload, e.type AS ended, e.at_ms AS ended_ms
    FROM posted p
    LEFT JOIN LATERAL (
        SELECT type, at_ms FROM event_log
        WHERE request_id = p.request_id AND type = ANY($6::text[]) AND error IS NULL
        ORDER BY at_ms, id
        LIMIT 1
    ) e ON true
    WHERE $7::text IS NULL OR coalesce(e.type, '') = $7
    ORDER BY p.at_ms DESC, p.request_id
    LIMIT $8
)
SELECT f.request_id, f.market_id, f.at_ms, f.payload::text AS payload, f.ended, f.ended_ms,
       (SELECT count(DISTINCT x.payload ->> 'offer_id') FROM event_log x
        WHERE x.request_id = f.request_id AND x.type = 'OfferMade' AND x.error IS NULL)::int
           AS offers,
       (SELECT count(DISTINCT x.worker_id) FROM event_log x
        WHERE x.request_id = f.request_id AND x.type = 'WorkerAssigned' AND x.error IS NULL)::int
           AS assigned
FROM found f
ORDER BY f.at_ms DESC, f.request_id;
