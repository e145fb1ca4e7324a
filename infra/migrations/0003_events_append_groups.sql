-- Atomic multi-stream appends: entries now carry a group number, and an entry is inserted only
-- if EVERY entry of its group passes (no known ids, expected version matched). A single append
-- is a group of one. Everything else is as in 0002: one call per batch, the append lock first,
-- ids probed by index, rows inserted in entry then event order.
--
-- batch: [{"s": stream_id, "x": expected_version or null, "g": group, "e": [{"i": event_id,
--          "t": type, "d": data, "m": metadata}, ...]}, ...]
--        at most one entry per stream and no shared ids in the whole batch; a group's entries
--        share "g"; an entry without "g" is a group of its own (a writer from before 0003).
-- One row per entry, in order: `current`, `known` and `last_position` as in 0002, and
-- `group_ok`: whether its whole group passed (so, whether this entry was appended).
--
-- DROP, not CREATE OR REPLACE: PostgreSQL cannot change the result columns of an existing
-- function. Both happen in the migration's one transaction, so no caller sees it missing, and a
-- writer from before 0003 still works (it sends no "g" and selects only the columns it knows).
DROP FUNCTION events_append(jsonb);

CREATE FUNCTION events_append(batch jsonb)
RETURNS TABLE (idx integer, current integer, known integer, last_position bigint, group_ok boolean)
LANGUAGE plpgsql AS $$
BEGIN
    -- The events append lock, as in events_serialise(); taken here, before the versions are read.
    PERFORM pg_advisory_xact_lock(7243011);
    RETURN QUERY
    WITH req AS MATERIALIZED (
        SELECT (o - 1)::int AS i, coalesce((r->>'g')::int, -o::int) AS grp, r->>'s' AS sid,
               (r->>'x')::int AS expected, r->'e' AS evs,
               coalesce((SELECT max(ev.version) FROM events ev WHERE ev.stream_id = r->>'s'), 0) AS cur,
               -- One index probe per id. OFFSET 0 keeps EXISTS a correlated probe: pulled up into
               -- a join, it was planned as a scan of the whole log for as long as the table had
               -- no statistics (a new install's first minutes), each batch slower than the last.
               (SELECT count(*) FROM jsonb_array_elements(r->'e') x
                 WHERE EXISTS (SELECT FROM events ev WHERE ev.event_id = (x->>'i')::uuid OFFSET 0))::int AS n_known
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS t(r, o)
    ), judged AS MATERIALIZED (
        SELECT req.*,
               bool_and(req.n_known = 0 AND (req.expected IS NULL OR req.expected = req.cur))
                   OVER (PARTITION BY req.grp) AS ok
          FROM req
    ), new_rows AS (
        SELECT j.i, e.o, j.sid, j.cur + e.o::int AS version, (e.x->>'i')::uuid AS event_id,
               e.x->>'t' AS type, e.x->'d' AS data, coalesce(e.x->'m', '{}') AS metadata
          FROM judged j, jsonb_array_elements(j.evs) WITH ORDINALITY AS e(x, o)
         WHERE j.ok
    ), inserted AS (
        -- In entry order, then event order, so each stream's positions rise with its versions.
        INSERT INTO events (stream_id, version, event_id, type, data, metadata)
        SELECT n.sid, n.version, n.event_id, n.type, n.data, n.metadata FROM new_rows n ORDER BY n.i, n.o
        RETURNING events.stream_id, events.position
    )
    SELECT j.i, j.cur, j.n_known, last.pos, j.ok
      FROM judged j LEFT JOIN (SELECT ins.stream_id, max(ins.position) AS pos FROM inserted ins GROUP BY ins.stream_id) last
        ON last.stream_id = j.sid
     ORDER BY j.i;
END $$;
