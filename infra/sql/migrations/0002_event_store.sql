-- The event store: one row per Kafka record of every topic, written by the archiver.
-- A record is identified by (topic, partition, offset, record timestamp): redelivery of the
-- same record is a no-op, and a development broker whose log restarted at offset 0 cannot
-- overwrite what was archived before (its records carry other timestamps).
CREATE TABLE IF NOT EXISTS event_log (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    part          integer NOT NULL,
    kafka_offset  bigint NOT NULL,
    kafka_ts_ms   bigint NOT NULL,
    key           text,
    event_id      text,
    type          text,
    at_ms         bigint,
    request_id    text,
    worker_id     text,
    market_id     text,
    lon           double precision,
    lat           double precision,
    payload       jsonb,            -- the message as sent, when it is a JSON object
    raw           bytea,            -- the bytes as sent, when they are not
    error         text,             -- why the message is not valid (NULL: valid)
    archived_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_log_record UNIQUE (topic, part, kafka_offset, kafka_ts_ms)
);

CREATE INDEX IF NOT EXISTS event_log_request ON event_log (request_id, at_ms)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS event_log_worker ON event_log (worker_id, at_ms)
    WHERE worker_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS event_log_market ON event_log (market_id, at_ms)
    WHERE market_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS event_log_time ON event_log (at_ms, topic);
CREATE INDEX IF NOT EXISTS event_log_type_time ON event_log (type, at_ms);
-- "Which waves considered this worker?": the candidates of every WaveSent.
CREATE INDEX IF NOT EXISTS event_log_candidates ON event_log
    USING gin ((payload -> 'candidates') jsonb_path_ops) WHERE type = 'WaveSent';

-- Where each archiver stands on each partition, written with the rows it archived.
CREATE TABLE IF NOT EXISTS archive_progress (
    consumer      text NOT NULL,
    topic         text NOT NULL,
    part          integer NOT NULL,
    next_offset   bigint NOT NULL,
    lag           bigint,
    newest_ts_ms  bigint,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, part)
);
