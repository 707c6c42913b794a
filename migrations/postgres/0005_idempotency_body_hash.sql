-- The body an `Idempotency-Key` was first used with (SHA-256, hex), so that the same key with a
-- different body is refused (422) instead of silently answered with the first run. NULL for runs
-- without a key, cron ticks and runs created before this migration (never compared).
ALTER TABLE runs ADD COLUMN idempotency_body_hash text;
