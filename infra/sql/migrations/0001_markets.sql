-- The market registry: 486 gig markets and 4,609 community micro-markets.
CREATE TABLE IF NOT EXISTS prefectures (
    code           text PRIMARY KEY,
    name_zh        text NOT NULL,
    name_en        text NOT NULL,
    seat_lon       double precision NOT NULL,
    seat_lat       double precision NOT NULL,
    population_m   double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS markets (
    market_id        text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('gig', 'micro')),
    name_zh          text NOT NULL,
    name_en          text NOT NULL,
    prefecture_code  text NOT NULL REFERENCES prefectures (code),
    lon              double precision NOT NULL CHECK (lon BETWEEN 73 AND 136),
    lat              double precision NOT NULL CHECK (lat BETWEEN 3 AND 54)
);

CREATE INDEX IF NOT EXISTS markets_prefecture ON markets (prefecture_code);
