"""Who runs an execution (a lease with a heartbeat), kill requests from other processes,
where the flow file was (for restarts), and one lock row per flow (execution concurrency).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot add several columns and an index in one ALTER otherwise
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("flow_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("owner_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("owner_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.String(32), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("kill_requested_at", sa.DateTime(timezone=True), nullable=True))
    # Counting the running executions of one flow (concurrency limits) reads this index.
    op.create_index(
        "ix_executions_namespace_flow_id_state", "executions", ["namespace", "flow_id", "state"]
    )
    op.create_table(
        "flow_locks",
        sa.Column("flow_key", sa.String(511), nullable=False),
        sa.Column("touched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("flow_key", name="pk_flow_locks"),
    )


def downgrade() -> None:
    op.drop_table("flow_locks")
    op.drop_index("ix_executions_namespace_flow_id_state", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        for column in (
            "kill_requested_at",
            "heartbeat_at",
            "lease_token",
            "owner_pid",
            "owner_host",
            "flow_path",
        ):
            batch.drop_column(column)
