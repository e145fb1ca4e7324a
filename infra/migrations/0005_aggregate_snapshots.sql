-- Folded states of long streams (a 10,000-member workspace, a channel, a user's read markers),
-- so that a process that has not loaded one yet reads its snapshot and the events after it, not
-- the whole stream. A cache, like every read model: deleting any or all rows is always safe (the
-- next load folds the log and writes them again). `fingerprint` names the code that folded the
-- state (commands/snapshots.py): each version of the code reads and writes its own row (so a
-- rolling deploy's old and new processes do not overwrite each other), and another code's row
-- is dropped once it is a day old.
CREATE TABLE aggregate_snapshots (
    decider        text        NOT NULL,
    stream_id      text        NOT NULL,
    version        integer     NOT NULL,
    fingerprint    text        NOT NULL,
    first_position bigint      NOT NULL,
    last_position  bigint      NOT NULL,
    body           bytea       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (decider, stream_id, fingerprint)
);
