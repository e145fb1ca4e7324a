-- The event log: the truth. Everything else is a projection of it.
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id   text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    event_id    uuid        NOT NULL UNIQUE,
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);
CREATE INDEX events_type_idx ON events (type, position);

-- Appends are serialised by one transaction-scoped advisory lock, taken before any position is
-- drawn. A transaction that drew a lower position has therefore committed (and is visible)
-- before a higher one can be drawn, so a reader that passed position p never later finds an
-- event below p. The lock is taken by this trigger, not only by our writer, so that no other
-- writer (a psql session, a migration) can break the rule. Writers batch many appends into
-- one transaction (group commit) to keep throughput despite the serialisation.
CREATE FUNCTION events_serialise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7243011);  -- the events append lock
    RETURN NULL;
END $$;
CREATE TRIGGER events_serialise BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_serialise();

-- Subscribers LISTEN on hubbub_events; identical payloads collapse to one per transaction.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hubbub_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- The log is append-only.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed on events', TG_OP;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- Projector checkpoints, written in the same transaction as each projection's rows.
CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
