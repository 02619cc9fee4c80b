"""Results in weekly partitions, so old ones are dropped whole; idempotency moves to a ledger.

`feedback_results` becomes partitioned by range of `processed_at`, one partition per ISO week
(`feedback_results_wYYYYMMDD`, the Monday) plus a default one. A unique constraint on a
partitioned table must contain the partition key, so `event_id` can no longer be unique there:
`result_ids (event_id primary key, processed_at)` is the idempotency ledger instead. The store
inserts an event's id there first and its result only if that insert was new, so a replay in a
later week stores nothing (tested across a partition boundary).

`feedback_results_ensure_week(day)` creates the partition of the week holding `day`;
`feedback_results_drop_weeks_before(bound)` drops partitions that end at or before `bound`. The
worker's housekeeping calls both (see runtime/retention). The existing rows are copied, the
views that read the table are recreated, and the rollup triggers move to the new table (the
copy is not counted again). The outbox's foreign key to the results goes: retention may drop a
result whose outbox row is kept until published.

Revision ID: 0006_weekly_partitions
Revises: 0005_outbox_kinds_and_retention
Create Date: 2026-11-24
"""

from alembic import op

revision = "0006_weekly_partitions"
down_revision = "0005_outbox_kinds_and_retention"
branch_labels = None
depends_on = None

VIEWS_ON_RESULTS = ("escalation_backlog", "review_agreement_daily")
INDEXES = {
    "feedback_results_event_id_idx": "(event_id)",
    "feedback_results_event_time_idx": "(event_time)",
    "feedback_results_product_time_idx": "(product, event_time)",
    "feedback_results_source_time_idx": "(source, event_time)",
    "feedback_results_open_escalations_idx": "(processed_at) where escalated and acknowledged_at is null",
    "feedback_results_reviewed_idx": "(reviewed_at) where reviewed_label is not null",
}
TRIGGERS = """
    create trigger feedback_results_rollup after insert on feedback_results
        referencing new table as inserted_rows for each statement execute function sentiment_rollup_add();
    create trigger feedback_results_rollup_ack after update on feedback_results
        referencing old table as old_rows new table as new_rows
        for each statement execute function sentiment_rollup_acknowledge();
"""
ENSURE_WEEK = """
    create function feedback_results_ensure_week(day date) returns text language plpgsql as $$
    declare
        monday date := date_trunc('week', day)::date;
        name text := 'feedback_results_w' || to_char(monday, 'YYYYMMDD');
    begin
        if to_regclass(name) is null then
            execute format(
                'create table %I partition of feedback_results for values from (%L) to (%L)',
                name, monday::timestamp at time zone 'UTC', (monday + 7)::timestamp at time zone 'UTC'
            );
        end if;
        return name;
    end $$
"""
DROP_WEEKS_BEFORE = """
    create function feedback_results_drop_weeks_before(bound timestamptz) returns setof text language plpgsql as $$
    declare
        part record;
    begin
        for part in
            select child.relname as name
            from pg_inherits join pg_class child on child.oid = pg_inherits.inhrelid
            where pg_inherits.inhparent = 'feedback_results'::regclass and child.relname ~ '^feedback_results_w\\d{8}$'
              and (to_date(substr(child.relname, 19), 'YYYYMMDD') + 7)::timestamp at time zone 'UTC' <= bound
            order by child.relname
        loop
            execute format('drop table %I', part.name);
            return next part.name;
        end loop;
    end $$
"""


def _rename_away() -> dict[str, str]:
    """Drop the views on the table (returning their definitions) and rename it to feedback_results_old."""
    connection = op.get_bind()
    views = {
        name: connection.exec_driver_sql(f"select pg_get_viewdef('{name}'::regclass)").scalar_one()
        for name in VIEWS_ON_RESULTS
    }
    for name in views:
        op.execute(f"drop view {name}")
    op.execute("alter table feedback_results rename to feedback_results_old")
    return views


def _copy_and_drop_old(views: dict[str, str]) -> None:
    """Copy every row (the generated event_time is computed again), drop the old table, recreate the views."""
    columns = ", ".join(
        row[0]
        for row in op.get_bind().exec_driver_sql(
            "select column_name from information_schema.columns where table_name = 'feedback_results_old' "
            "and is_generated = 'NEVER' order by ordinal_position"
        )
    )
    op.execute(f"insert into feedback_results ({columns}) select {columns} from feedback_results_old")
    op.execute("drop table feedback_results_old")
    for name, definition in views.items():
        op.execute(f"create view {name} as {definition}")


def _indexes_and_triggers(*, skip: tuple[str, ...] = ()) -> None:
    for name, columns in INDEXES.items():
        if name not in skip:
            op.execute(f"create index {name} on feedback_results {columns}")
    op.execute(TRIGGERS)


def upgrade() -> None:
    op.execute("create table result_ids (event_id text primary key, processed_at timestamptz not null)")
    op.execute("insert into result_ids select event_id, processed_at from feedback_results")
    op.execute("create index result_ids_processed_at_idx on result_ids (processed_at)")
    op.execute("alter table escalation_outbox drop constraint if exists escalation_outbox_event_id_fkey")
    views = _rename_away()
    op.execute(
        "create table feedback_results (like feedback_results_old including defaults including constraints "
        "including generated) partition by range (processed_at)"
    )
    op.execute("create sequence feedback_results_row_id owned by feedback_results.id")
    op.execute(
        "select setval('feedback_results_row_id', coalesce((select max(id) from feedback_results_old), 0) + 1, false)"
    )
    op.execute("alter table feedback_results alter column id set default nextval('feedback_results_row_id')")
    op.execute("create table feedback_results_default partition of feedback_results default")
    op.execute(ENSURE_WEEK)
    op.execute(DROP_WEEKS_BEFORE)
    op.execute(
        "select feedback_results_ensure_week(week::date) from generate_series("
        "date_trunc('week', coalesce((select min(processed_at) from feedback_results_old), now()) at time zone 'UTC'),"
        " now() at time zone 'UTC' + interval '7 days', interval '1 week') as week"
    )
    _copy_and_drop_old(views)
    _indexes_and_triggers()


def downgrade() -> None:
    views = _rename_away()
    op.execute("create table feedback_results (like feedback_results_old including constraints including generated)")
    op.execute("alter table feedback_results alter column id add generated by default as identity")
    _copy_and_drop_old(views)
    op.execute(
        "select setval(pg_get_serial_sequence('feedback_results', 'id'), "
        "coalesce((select max(id) from feedback_results), 0) + 1, false)"
    )
    op.execute("alter table feedback_results alter column processed_at set default now()")
    op.execute("alter table feedback_results add primary key (id)")
    op.execute("alter table feedback_results add constraint feedback_results_event_id_key unique (event_id)")
    _indexes_and_triggers(skip=("feedback_results_event_id_idx",))
    op.execute(
        "alter table escalation_outbox add constraint escalation_outbox_event_id_fkey foreign key (event_id) "
        "references feedback_results (event_id) on delete cascade not valid"
    )
    op.execute("drop function feedback_results_drop_weeks_before(timestamptz)")
    op.execute("drop function feedback_results_ensure_week(date)")
    op.execute("drop table result_ids")
