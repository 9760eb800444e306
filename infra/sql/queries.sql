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
