-- An independent check of `replay report --by prefecture` on the archive, written straight
-- on event_log (no project code). Window: requests posted in [:from_ms, :to_ms]; their
-- outcomes whenever they came; job seekers = distinct workers who checked in in the window.
--   psql "$GIG_PG_DSN" -v from_ms=… -v to_ms=… -f docs/sql/check-report.sql
WITH hires AS (
    SELECT DISTINCT ON (request_id) request_id, market_id,
           (payload ->> 'headcount')::int AS headcount,
           (payload ->> 'wage_yuan_per_day')::float AS wage
    FROM event_log
    WHERE type = 'HireRequested' AND at_ms BETWEEN :from_ms AND :to_ms
    ORDER BY request_id, at_ms
), ends AS (
    SELECT request_id, array_agg(DISTINCT type) AS kinds
    FROM event_log
    WHERE type IN ('RequestFilled', 'RequestExpired', 'RequestCancelled', 'RequestRejected')
      AND request_id IN (SELECT request_id FROM hires)
    GROUP BY request_id
), hired AS (
    SELECT DISTINCT payload ->> 'offer_id' AS offer_id, request_id, worker_id
    FROM event_log
    WHERE type = 'WorkerAssigned' AND request_id IN (SELECT request_id FROM hires)
), seekers AS (
    SELECT DISTINCT e.worker_id, m.prefecture_code
    FROM event_log e
    JOIN LATERAL (
        SELECT prefecture_code FROM markets
        ORDER BY (markets.lon - e.lon) ^ 2 + (markets.lat - e.lat) ^ 2 LIMIT 1
    ) m ON e.market_id IS NULL
    WHERE e.type = 'WorkerCheckedIn' AND e.at_ms BETWEEN :from_ms AND :to_ms
    UNION
    SELECT DISTINCT e.worker_id, mk.prefecture_code
    FROM event_log e JOIN markets mk ON mk.market_id = e.market_id
    WHERE e.type = 'WorkerCheckedIn' AND e.at_ms BETWEEN :from_ms AND :to_ms
)
SELECT p.name_zh, p.name_en,
       count(h.request_id) AS requests,
       sum(h.headcount) AS positions,
       (SELECT count(DISTINCT s.worker_id) FROM seekers s WHERE s.prefecture_code = p.code)
           AS seekers,
       (SELECT count(*) FROM hired x JOIN hires y USING (request_id)
         JOIN markets z ON z.market_id = y.market_id WHERE z.prefecture_code = p.code)
           AS hired,
       count(*) FILTER (WHERE 'RequestFilled' = ANY (e.kinds)) AS filled,
       count(*) FILTER (WHERE 'RequestExpired' = ANY (e.kinds)) AS expired,
       count(*) FILTER (WHERE 'RequestCancelled' = ANY (e.kinds)) AS cancelled,
       round((sum(h.wage * h.headcount) / sum(h.headcount))::numeric) AS wage_mean_by_headcount
FROM hires h
JOIN markets m ON m.market_id = h.market_id
JOIN prefectures p ON p.code = m.prefecture_code
LEFT JOIN ends e ON e.request_id = h.request_id
GROUP BY p.code, p.name_zh, p.name_en
ORDER BY p.code;
