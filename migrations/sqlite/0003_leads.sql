-- Leads written by the `leads.upsert` node, and the cache nodes keep provider answers in
-- (see migrations/postgres/0003_leads.sql for the same tables in Postgres types).
--
-- Ids are UUIDv7 text like run ids, so `ORDER BY id DESC` is newest first. Timestamps are
-- RFC 3339 text and JSON values are text, as in 0001. `data` holds the attributes without a
-- column of their own, merged key by key by each upsert.

CREATE TABLE organizations (
    id         TEXT NOT NULL PRIMARY KEY,
    -- Normalised (lowercase ASCII, punycode): one organisation per domain.
    domain     TEXT NOT NULL UNIQUE,
    name       TEXT,
    industry   TEXT,
    employees  INTEGER,
    revenue    REAL,
    country    TEXT,
    data       TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE contacts (
    id              TEXT NOT NULL PRIMARY KEY,
    -- Normalised like the domain: one contact per address.
    email           TEXT NOT NULL UNIQUE,
    organization_id TEXT REFERENCES organizations (id) ON DELETE SET NULL,
    first_name      TEXT,
    last_name       TEXT,
    title           TEXT,
    data            TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

CREATE INDEX contacts_by_organization ON contacts (organization_id);

CREATE TABLE leads (
    id         TEXT NOT NULL PRIMARY KEY,
    -- One lead per contact: upserts of the same address update it.
    contact_id TEXT NOT NULL UNIQUE REFERENCES contacts (id) ON DELETE CASCADE,
    source     TEXT,
    status     TEXT NOT NULL,
    -- A JSON list of strings.
    tags       TEXT NOT NULL DEFAULT '[]',
    -- The latest score and tier, copied from the newest score for listing and filtering.
    score      REAL,
    tier       TEXT,
    -- The run of the last upsert; no foreign key, so runs can be purged without their leads.
    run_id     TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

-- `GET /api/v1/leads?tier=` and `?status=`, newest first.
CREATE INDEX leads_by_tier ON leads (tier, id);
CREATE INDEX leads_by_status ON leads (status, id);

CREATE TABLE lead_scores (
    id         TEXT NOT NULL PRIMARY KEY,
    lead_id    TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    total      REAL NOT NULL,
    tier       TEXT,
    breakdown  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

-- One score per lead and run: an attempt that runs again (after a crash, a lost outcome)
-- replaces its score instead of adding a second one. Also the history of one lead, in order.
CREATE UNIQUE INDEX lead_scores_by_lead_run ON lead_scores (lead_id, run_id);
CREATE INDEX lead_scores_by_lead ON lead_scores (lead_id, id);

CREATE TABLE cache_entries (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) STRICT;

-- Expired entries are deleted a few at a time by later writes.
CREATE INDEX cache_entries_by_expiry ON cache_entries (expires_at);
