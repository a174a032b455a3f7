-- Response parsing health per annotator: ok / repaired / failed shares and latency
SELECT backend, model,
       count(*) AS samples,
       round(avg(CASE WHEN parse_status = 'ok' THEN 1.0 ELSE 0.0 END), 4) AS ok_rate,
       round(avg(CASE WHEN parse_status = 'repaired' THEN 1.0 ELSE 0.0 END), 4) AS repaired_rate,
       round(avg(CASE WHEN parse_status = 'failed' THEN 1.0 ELSE 0.0 END), 4) AS failed_rate,
       round(median(latency_ms), 1) AS median_latency_ms,
       mode(error) FILTER (WHERE parse_status = 'failed') AS top_error
FROM mc_samples
GROUP BY ALL
ORDER BY samples DESC;
