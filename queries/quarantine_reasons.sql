-- Quarantined inputs per source, stage and reason, with one example item
SELECT source, stage, reason, count(*) AS items, min(item_id) AS example
FROM quarantine
GROUP BY ALL
ORDER BY items DESC, source, stage, reason;
