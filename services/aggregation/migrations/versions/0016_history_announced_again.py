"""aggregation: history loaded before validation and notify heard of loads, announced again

Validation judges a return with what history loads brought at its places, and notify's
deadline check counts a place history brought as reported; both learn of a load only from
its ``history_loaded`` event (validation 0006, notify since the event's first version).
History loaded by a version before those was never announced: after the upgrade a return
that the loaded values make break a HIGH rule was accepted, outliers were judged without
the past, and the deadline check alerted places history had filled (an upgrade probe).

This revision puts one ``history_loaded`` event per load (and per 5,000 places) in the
outbox, from what aggregation holds: the load's completeness rows are its places, and the
places where its values are stored but a return was counted first go as ``cleared`` (for
validation, which takes every place named in again; notify reads ``places`` only). The
consumers are idempotent, so loads already announced are announced again harmlessly: a
place marked again is taken in again, an existing record of receipt stays. The message is
written here as the relay sends it (schema version 1), frozen: this revision does not
change with the event's schema. The queues are declared before any migration runs
(``runner.prepare``, ``statnet migrate``), so a consumer the version before lacked has its
queue when the relays, old instances' included, publish these. It reads every loaded value
once (no index serves ``return_id``): seconds for a national database of ten million, under
the migration lock, while aggregation waits to start.

Revision ID: 0016
"""
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

S = "aggregation"
PLACES_PER_EVENT = 5000
# a UTC time as the Python producer writes it (datetime.isoformat)
ISO_UTC = """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""


def upgrade():
    op.execute(f"""
        WITH reported AS (
            SELECT return_id AS batch, data_set, org_unit, period, accepted_at,
                   (row_number() OVER (PARTITION BY return_id ORDER BY org_unit, period) - 1)
                       / {PLACES_PER_EVENT} AS part
            FROM {S}.completeness WHERE return_id LIKE 'history:%'),
        loads AS (
            SELECT batch, part, min(data_set) AS data_set, min(accepted_at) AS loaded_at,
                   json_agg(json_build_object('org_unit', org_unit, 'period', period)
                            ORDER BY org_unit, period) AS places
            FROM reported GROUP BY batch, part),
        -- values a load stored where a return's acceptance was counted first
        unreported AS (
            SELECT v.return_id AS batch,
                   json_agg(json_build_object('org_unit', v.org_unit, 'period', v.period)
                            ORDER BY v.org_unit, v.period) AS cleared
            FROM (SELECT DISTINCT return_id, org_unit, period FROM {S}.data_value
                  WHERE return_id LIKE 'history:%') v
            WHERE NOT EXISTS (SELECT 1 FROM reported r WHERE r.batch = v.return_id
                              AND r.org_unit = v.org_unit AND r.period = v.period)
            GROUP BY v.return_id),
        -- a load whose every place a return was counted at first has no completeness row of
        -- its own: its event names no places (notify has nothing to record) and no data set
        -- (what it was loaded for is kept nowhere else; notify reads it only with places)
        events AS (
            SELECT gen_random_uuid()::text AS event_id, batch, coalesce(l.part, 0) AS part,
                   coalesce(l.loaded_at, now()) AS loaded_at,
                   json_build_object(
                       'batch', batch, 'data_set', coalesce(l.data_set, ''),
                       'places', coalesce(l.places, '[]'::json),
                       'cleared', CASE WHEN coalesce(l.part, 0) = 0 THEN coalesce(u.cleared, '[]'::json)
                                  ELSE '[]'::json END,
                       'loaded_at', to_char(coalesce(l.loaded_at, now()) AT TIME ZONE 'UTC', {ISO_UTC})) AS data
            FROM loads l FULL JOIN unreported u USING (batch))
        INSERT INTO {S}.outbox (event_id, event_type, message, correlation_id)
        SELECT event_id, 'history_loaded', json_build_object(
                   'event_id', event_id, 'event_type', 'history_loaded', 'source', 'aggregation',
                   'schema_version', 1,
                   'occurred_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', {ISO_UTC}),
                   'correlation_id', batch, 'data', data),
               batch
        FROM events ORDER BY loaded_at, batch, part
    """)


def downgrade():
    pass  # what was announced stays announced
