-- Cross-granularity consistency failures: flag counts per source, with accepted/abstained split
WITH flags AS (
    SELECT source, status, unnest(consistency_flags) AS flag
    FROM verified_labels
    WHERE len(consistency_flags) > 0
)
SELECT source, flag,
       count(*) AS faces,
       count(*) FILTER (WHERE status = 'accepted') AS accepted,
       count(*) FILTER (WHERE status = 'abstained') AS abstained
FROM flags
GROUP BY source, flag
ORDER BY faces DESC, source, flag;
