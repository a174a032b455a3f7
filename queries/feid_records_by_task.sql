-- FEID size: records per task, template and origin, with mean confidence
SELECT task, template_id, origin,
       count(*) AS records,
       count(DISTINCT face_id) AS faces,
       round(avg(confidence), 4) AS mean_confidence
FROM feid
GROUP BY ALL
ORDER BY task, template_id, origin;
