-- FEAB composition: items per task and gold origin (flagged = generated-and-verified gold), per source
SELECT source, task, gold_origin, gold_flagged,
       count(*) AS items,
       count(DISTINCT face_id) AS faces,
       count(DISTINCT subject_id) AS subjects
FROM feab
GROUP BY ALL
ORDER BY source, task, gold_origin;
