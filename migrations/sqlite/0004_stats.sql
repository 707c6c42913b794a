-- Indexes for `GET /api/v1/stats`, which a dashboard polls every few seconds: each figure over
-- the window ("the last 24 hours") reads a range of one index instead of the whole table.
-- The same indexes as migrations/postgres/0004_stats.sql.

-- Runs finished since an instant, per workflow and status, and their durations (the newest
-- first); the extra columns let SQLite answer from the index alone.
CREATE INDEX runs_finished ON runs (finished_at, workflow_id, status, started_at)
    WHERE finished_at IS NOT NULL;
-- Attempts that ended since an instant: the failed ones and the retries.
CREATE INDEX node_attempts_finished ON node_attempts (finished_at, status, attempt)
    WHERE finished_at IS NOT NULL;
-- Leads created since an instant.
CREATE INDEX leads_by_created_at ON leads (created_at);
