-- SV-UAMC effort: samples per face, stop reasons and verification verdicts per strategy
SELECT strategy, stop_reason, verdict,
       count(*) AS faces,
       round(avg(n_samples), 2) AS mean_samples,
       max(n_samples) AS max_samples,
       round(avg(n_calls), 2) AS mean_calls
FROM verified_labels
GROUP BY ALL
ORDER BY strategy, faces DESC;
