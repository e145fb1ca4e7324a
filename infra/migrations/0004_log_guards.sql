-- The log is append-only: TRUNCATE too (0001 refused only UPDATE and DELETE).
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- A transaction that holds the append lock and stalls (a psql session left at BEGIN after an
-- INSERT into events) would otherwise stall every append in every process, silently and
-- forever. After 10 s the waiting appends fail instead (SQLSTATE 55P03), with a clear error.
ALTER FUNCTION events_append(jsonb) SET lock_timeout = '10s';
