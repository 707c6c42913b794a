-- The distributed store's schema: workflow revisions, runs and node attempts. The same tables as
-- `migrations/sqlite/0001_init.sql`, in Postgres types.
--
-- Timestamps are `timestamptz`, which keeps microseconds like the SQLite store's text.
-- Ids and node ids use the "C" collation, so ordering and the `id < cursor` paging compare bytes
-- exactly as SQLite does, whatever the database's default collation.
-- JSON values are `json`, which keeps the text the engine wrote (key order, number spelling,
-- `\u0000`) while the server checks that it parses; the store never looks inside them.
-- SQL NULL means "absent" and the JSON `null` means a JSON null.

CREATE TABLE workflow_revisions (
    hash        text NOT NULL PRIMARY KEY,
    workflow_id text NOT NULL,
    source      text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE runs (
    id               text COLLATE "C" NOT NULL PRIMARY KEY,
    workflow_id      text NOT NULL,
    revision         text NOT NULL,
    status           text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    "trigger"        json NOT NULL,
    output           json,
    error            json,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    deadline_at      timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    idempotency_key  text
);

-- `GET /api/v1/runs?workflow=` newest first.
CREATE INDEX runs_by_workflow ON runs (workflow_id, id);
-- `?status=` and the unfinished runs recovered after a restart.
CREATE INDEX runs_by_status ON runs (status, id);
-- Admission control: running count and oldest queued runs of one workflow.
CREATE INDEX runs_by_workflow_status ON runs (workflow_id, status, id);
CREATE UNIQUE INDEX runs_idempotency_key ON runs (workflow_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE node_attempts (
    run_id      text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id     text COLLATE "C" NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    status      text NOT NULL
        CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    input       json,
    output      json,
    error       json,
    retryable   boolean NOT NULL DEFAULT false,
    not_before  timestamptz,
    created_at  timestamptz NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, node_id, attempt)
);

-- Retries waiting for their backoff: what to promote and when the next one is due.
CREATE INDEX node_attempts_pending_by_due ON node_attempts (not_before) WHERE status = 'pending';
