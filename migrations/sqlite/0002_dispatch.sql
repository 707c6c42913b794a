-- Distributed dispatch columns, kept in the embedded store too so both schemas stay one shape
-- (see migrations/postgres/0002_dispatch.sql). Timestamps are RFC 3339 text, as in 0001.

ALTER TABLE node_attempts ADD COLUMN worker TEXT;
ALTER TABLE node_attempts ADD COLUMN heartbeat_at TEXT;
ALTER TABLE node_attempts ADD COLUMN dispatched INTEGER NOT NULL DEFAULT 0;

CREATE INDEX node_attempts_open ON node_attempts (status, created_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX runs_running_by_deadline ON runs (deadline_at) WHERE status = 'running';
