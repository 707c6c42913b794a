-- The embedded store's schema: workflow revisions, runs and node attempts.
--
-- Timestamps are UTC RFC 3339 text with exactly six fractional digits
-- (`2026-03-04T05:06:07.123456Z`), so text order is time order and `<=` compares instants.
-- JSON values are text; SQL NULL means "absent" and the text `null` means a JSON null.

CREATE TABLE workflow_revisions (
    hash        TEXT NOT NULL PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE runs (
    id               TEXT NOT NULL PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    revision         TEXT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    "trigger"        TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    deadline_at      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    idempotency_key  TEXT
) STRICT;

-- `GET /api/v1/runs?workflow=` newest first.
CREATE INDEX runs_by_workflow ON runs (workflow_id, id);
-- `?status=` and the unfinished runs recovered after a restart.
CREATE INDEX runs_by_status ON runs (status, id);
-- Admission control: running count and oldest queued runs of one workflow.
CREATE INDEX runs_by_workflow_status ON runs (workflow_id, status, id);
CREATE UNIQUE INDEX runs_idempotency_key ON runs (workflow_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE node_attempts (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    status      TEXT NOT NULL
        CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    input       TEXT,
    output      TEXT,
    error       TEXT,
    retryable   INTEGER NOT NULL DEFAULT 0 CHECK (retryable IN (0, 1)),
    not_before  TEXT,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, node_id, attempt)
) STRICT;

-- Retries waiting for their backoff: what to promote and when the next one is due.
CREATE INDEX node_attempts_pending_by_due ON node_attempts (not_before) WHERE status = 'pending';
