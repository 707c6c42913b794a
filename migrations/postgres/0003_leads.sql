-- Leads written by the `leads.upsert` node, and the cache nodes keep provider answers in. The
-- same tables as `migrations/sqlite/0003_leads.sql`, in Postgres types.
--
-- Ids are UUIDv7 text like run ids, in the "C" collation so that `ORDER BY id DESC` (newest
-- first) and cursors compare bytes as SQLite does. JSON values are `json`, as in 0001: the
-- store merges `data` and `tags` itself, under the row lock its upsert takes.

CREATE TABLE organizations (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    -- Normalised (lowercase ASCII, punycode): one organisation per domain.
    domain     text NOT NULL UNIQUE,
    name       text,
    industry   text,
    employees  bigint,
    revenue    double precision,
    country    text,
    data       json NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE contacts (
    id              text COLLATE "C" NOT NULL PRIMARY KEY,
    -- Normalised like the domain: one contact per address.
    email           text NOT NULL UNIQUE,
    organization_id text COLLATE "C" REFERENCES organizations (id) ON DELETE SET NULL,
    first_name      text,
    last_name       text,
    title           text,
    data            json NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX contacts_by_organization ON contacts (organization_id);

CREATE TABLE leads (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    -- One lead per contact: upserts of the same address update it.
    contact_id text COLLATE "C" NOT NULL UNIQUE REFERENCES contacts (id) ON DELETE CASCADE,
    source     text,
    status     text NOT NULL,
    -- A JSON list of strings.
    tags       json NOT NULL DEFAULT '[]',
    -- The latest score and tier, copied from the newest score for listing and filtering.
    score      double precision,
    tier       text,
    -- The run of the last upsert; no foreign key, so runs can be purged without their leads.
    run_id     text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- `GET /api/v1/leads?tier=` and `?status=`, newest first.
CREATE INDEX leads_by_tier ON leads (tier, id);
CREATE INDEX leads_by_status ON leads (status, id);

CREATE TABLE lead_scores (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    lead_id    text COLLATE "C" NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    total      double precision NOT NULL,
    tier       text,
    breakdown  json NOT NULL,
    run_id     text NOT NULL,
    created_at timestamptz NOT NULL
);

-- One score per lead and run: an attempt that runs again (after a crash, a lost outcome)
-- replaces its score instead of adding a second one. Also the history of one lead, in order.
CREATE UNIQUE INDEX lead_scores_by_lead_run ON lead_scores (lead_id, run_id);
CREATE INDEX lead_scores_by_lead ON lead_scores (lead_id, id);

CREATE TABLE cache_entries (
    namespace  text NOT NULL,
    key        text NOT NULL,
    value      json NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- Expired entries are deleted a few at a time by later writes.
CREATE INDEX cache_entries_by_expiry ON cache_entries (expires_at);
