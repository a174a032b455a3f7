-- Model comparison on FEAB: latest run per model, headline metrics on all gold and human-only gold
WITH latest AS (
    SELECT model_name, max(evaluated_at) AS evaluated_at FROM evaluations GROUP BY model_name
)
SELECT e.model_name AS model, e.run_id, e.subset,
       max(value) FILTER (WHERE task = 'expression' AND metric = 'accuracy') AS expr_accuracy,
       max(value) FILTER (WHERE task = 'expression' AND metric = 'macro_f1') AS expr_macro_f1,
       max(value) FILTER (WHERE task = 'expression' AND metric = 'ece') AS expr_ece,
       max(value) FILTER (WHERE task = 'va' AND metric = 'ccc_valence') AS ccc_valence,
       max(value) FILTER (WHERE task = 'va' AND metric = 'ccc_arousal') AS ccc_arousal,
       max(value) FILTER (WHERE task = 'aus' AND metric = 'mean_f1') AS au_mean_f1
FROM evaluations e JOIN latest l USING (model_name, evaluated_at)
GROUP BY ALL
ORDER BY subset, expr_accuracy DESC NULLS LAST, model;
