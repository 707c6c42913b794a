-- Distributed dispatch: which worker holds a running attempt and when it last said it was
-- alive (a lease), and whether a queued attempt has reached the broker (the outbox).
--
-- `dispatched` is false from the insert of a queued attempt until RabbitMQ confirmed its
-- message; a server sweeps queued attempts still undispatched after a grace period and
-- publishes them, so a crash between the commit and the publish loses nothing.
-- `heartbeat_at` is refreshed by the worker running the attempt; a running attempt whose
-- heartbeat is older than the lease is published again for another worker.

ALTER TABLE node_attempts ADD COLUMN worker text;
ALTER TABLE node_attempts ADD COLUMN heartbeat_at timestamptz;
ALTER TABLE node_attempts ADD COLUMN dispatched boolean NOT NULL DEFAULT false;

-- The sweeps look only at open attempts, a small part of the table.
CREATE INDEX node_attempts_open ON node_attempts (status, created_at)
    WHERE status IN ('queued', 'running');
-- Runs past their deadline, whichever replica armed the timer.
CREATE INDEX runs_running_by_deadline ON runs (deadline_at) WHERE status = 'running';
