-- The ledger row of a request is written when the request goes out and completed once when
-- its answer arrives; the completion changes no indexed column, so with room left on each
-- page Postgres can update it in place (a HOT update: no new index entries).
ALTER TABLE followq.attempts SET (fillfactor = 80);
