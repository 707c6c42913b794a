-- A run's version, raised by every write that changes what deciding the run depends on: its
-- status and cancel request, and the set and outcomes of its attempts. A worker that decided
-- from the run as its own last write left it writes next only if the version is still the one
-- that write returned (local continuation without a lock or a read: see `store::postgres`).
-- Leases, heartbeats, dispatch marks and promotions of due retries do not raise it: deciding
-- treats queued, pending and running attempts alike as open.
ALTER TABLE runs ADD COLUMN version bigint NOT NULL DEFAULT 0;
