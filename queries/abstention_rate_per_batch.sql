-- Abstention rate per source and batch, with the most frequent abstain reason
SELECT source,
       batch,
       count(*) AS faces,
       count(*) FILTER (WHERE status = 'abstained') AS abstained,
       round(count(*) FILTER (WHERE status = 'abstained') / count(*), 4) AS abstention_rate,
       mode(abstain_reason) FILTER (WHERE status = 'abstained') AS top_reason
FROM verified_labels
GROUP BY source, batch
ORDER BY source, batch;
