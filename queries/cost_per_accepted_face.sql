-- Model calls, tokens and money per accepted face, per source/batch and annotator.
-- Sampling tokens and USD are per annotator (mc_samples); verification and cross-check tokens
-- are per batch, all annotators together (verified_labels keeps tokens, not prices).
WITH spend AS (
    SELECT source, batch, backend, model,
           count(*) AS samples,
           sum(prompt_tokens + completion_tokens) AS tokens,
           sum(cost_usd) AS cost_usd,
           avg(CASE WHEN cache_hit THEN 1.0 ELSE 0.0 END) AS cache_hit_rate
    FROM mc_samples
    GROUP BY ALL
), accepted AS (
    SELECT source, batch,
           count(*) FILTER (WHERE status = 'accepted') AS accepted_faces,
           sum(n_calls) AS calls_incl_verification,
           sum(coalesce(verify_prompt_tokens, 0) + coalesce(verify_completion_tokens, 0)
               + coalesce(list_sum(check_prompt_tokens), 0)
               + coalesce(list_sum(check_completion_tokens), 0)) AS verification_tokens
    FROM verified_labels
    GROUP BY ALL
)
SELECT s.source, s.batch, s.backend, s.model, a.accepted_faces, s.samples,
       round(a.calls_incl_verification / nullif(a.accepted_faces, 0), 3) AS calls_per_accepted,
       round(s.tokens / nullif(a.accepted_faces, 0), 1) AS tokens_per_accepted,
       round(a.verification_tokens / nullif(a.accepted_faces, 0), 1) AS verification_tokens_per_accepted,
       round(s.cost_usd / nullif(a.accepted_faces, 0), 6) AS usd_per_accepted,
       round(s.cache_hit_rate, 4) AS cache_hit_rate
FROM spend s JOIN accepted a USING (source, batch)
ORDER BY s.source, s.batch;
