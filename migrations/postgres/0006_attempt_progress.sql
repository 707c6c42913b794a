-- How far a running `foreach` attempt is: items done of its total. Written about once a second
-- by the process that runs the attempt, never per item, and shown in the run JSON while the
-- attempt runs (so the API server sees it in distributed mode too). Goes with its attempt.
CREATE TABLE attempt_progress (
    run_id  text COLLATE "C" NOT NULL,
    node_id text COLLATE "C" NOT NULL,
    attempt integer NOT NULL,
    done    bigint NOT NULL CHECK (done >= 0),
    total   bigint NOT NULL CHECK (total >= 0),
    PRIMARY KEY (run_id, node_id, attempt),
    FOREIGN KEY (run_id, node_id, attempt)
        REFERENCES node_attempts (run_id, node_id, attempt) ON DELETE CASCADE
);
