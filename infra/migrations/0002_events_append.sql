-- One round trip per batch of appends: the writer sends every append waiting in its process as
-- one JSON document, and this function checks and inserts them under the append lock, so the
-- lock is never held while the server waits for the client.
--
-- batch: [{"s": stream_id, "x": expected_version or null, "e": [{"i": event_id, "t": type,
--          "d": data, "m": metadata}, ...]}, ...]  -- at most one entry per stream, no shared ids
-- One row per entry, in order: its stream's version before the append (`current`), how many of
-- its event ids the log already holds (`known`), and, when it was appended, the position of its
-- last event. An entry is appended whole when known = 0 and expected is null or = current.
CREATE FUNCTION events_append(batch jsonb)
RETURNS TABLE (idx integer, current integer, known integer, last_position bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- The events append lock, as in events_serialise(); taken here, before the versions are read.
    PERFORM pg_advisory_xact_lock(7243011);
    RETURN QUERY
    WITH req AS MATERIALIZED (
        SELECT (o - 1)::int AS i, r->>'s' AS sid, (r->>'x')::int AS expected, r->'e' AS evs,
               coalesce((SELECT max(ev.version) FROM events ev WHERE ev.stream_id = r->>'s'), 0) AS cur,
               -- One index probe per id. OFFSET 0 keeps EXISTS a correlated probe: pulled up into
               -- a join, it was planned as a scan of the whole log for as long as the table had
               -- no statistics (a new install's first minutes), each batch slower than the last.
               (SELECT count(*) FROM jsonb_array_elements(r->'e') x
                 WHERE EXISTS (SELECT FROM events ev WHERE ev.event_id = (x->>'i')::uuid OFFSET 0))::int AS n_known
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS t(r, o)
    ), new_rows AS (
        SELECT req.i, e.o, req.sid, req.cur + e.o::int AS version, (e.x->>'i')::uuid AS event_id,
               e.x->>'t' AS type, e.x->'d' AS data, coalesce(e.x->'m', '{}') AS metadata
          FROM req, jsonb_array_elements(req.evs) WITH ORDINALITY AS e(x, o)
         WHERE req.n_known = 0 AND (req.expected IS NULL OR req.expected = req.cur)
    ), inserted AS (
        -- In entry order, then event order, so each stream's positions rise with its versions.
        INSERT INTO events (stream_id, version, event_id, type, data, metadata)
        SELECT n.sid, n.version, n.event_id, n.type, n.data, n.metadata FROM new_rows n ORDER BY n.i, n.o
        RETURNING events.stream_id, events.position
    )
    SELECT req.i, req.cur, req.n_known, last.pos
      FROM req LEFT JOIN (SELECT ins.stream_id, max(ins.position) AS pos FROM inserted ins GROUP BY ins.stream_id) last
        ON last.stream_id = req.sid
     ORDER BY req.i;
END $$;
