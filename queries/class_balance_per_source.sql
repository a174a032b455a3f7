-- Expression class balance of accepted labels per source (count and share within the source)
SELECT source,
       expression,
       count(*) AS faces,
       round(count(*) / sum(count(*)) OVER (PARTITION BY source), 4) AS share
FROM verified_labels
WHERE status = 'accepted' AND expression IS NOT NULL
GROUP BY source, expression
ORDER BY source, faces DESC, expression;
