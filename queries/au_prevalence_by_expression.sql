-- AU prevalence by expression among accepted faces with coded AUs (share of faces showing each AU)
WITH coded AS (
    SELECT face_id, expression, aus
    FROM verified_labels
    WHERE status = 'accepted' AND aus IS NOT NULL AND expression IS NOT NULL
), totals AS (
    SELECT expression, count(*) AS faces FROM coded GROUP BY expression
), present AS (
    SELECT expression, unnest(aus) AS au FROM coded
)
SELECT p.expression, 'AU' || p.au AS au, count(*) AS faces_with_au, t.faces,
       round(count(*) / t.faces, 4) AS prevalence
FROM present p JOIN totals t USING (expression)
GROUP BY p.expression, p.au, t.faces
ORDER BY p.expression, prevalence DESC, p.au;
