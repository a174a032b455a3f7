-- Audit mode: agreement of generated expressions with the human label hidden from the annotator
SELECT v.source,
       count(*) AS audited_faces,
       count(*) FILTER (WHERE v.status = 'accepted') AS accepted,
       round(avg(CASE WHEN v.expression = r.known_expression THEN 1.0 ELSE 0.0 END)
             FILTER (WHERE v.status = 'accepted'), 4) AS accuracy_on_accepted,
       round(avg(v.expression_confidence) FILTER (WHERE v.status = 'accepted'), 4) AS mean_confidence
FROM verified_labels v
JOIN raw_faces r USING (source, batch, face_id)
WHERE list_contains(v.audit_hidden, 'expression') AND r.known_expression IS NOT NULL
GROUP BY v.source
ORDER BY v.source;
