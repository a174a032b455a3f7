-- Where accepted labels came from, per source and granularity (human / generated / verified / derived)
SELECT source, granularity, origin, count(*) AS faces
FROM (
    SELECT source, 'expression' AS granularity, expression_origin AS origin FROM verified_labels
    WHERE status = 'accepted' AND expression IS NOT NULL
    UNION ALL
    SELECT source, 'va', va_origin FROM verified_labels
    WHERE status = 'accepted' AND valence IS NOT NULL
    UNION ALL
    SELECT source, 'aus', au_origin FROM verified_labels
    WHERE status = 'accepted' AND aus IS NOT NULL
)
GROUP BY ALL
ORDER BY source, granularity, faces DESC;
