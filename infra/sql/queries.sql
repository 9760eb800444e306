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
