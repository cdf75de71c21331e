"""The first tables: executions, task_runs and log_lines.

Revision ID: 0001
Revises:
Create Date: 2024-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from models.py: a migration must keep creating
# the schema it created the day it was written, whatever the models say later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("flow_id", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(128), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        timestamp("created_at", nullable=False),
        timestamp("started_at"),
        timestamp("ended_at"),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    op.create_index("ix_executions_flow_id_created_at", "executions", ["flow_id", "created_at"])
    op.create_index("ix_executions_state", "executions", ["state"])

    op.create_table(
        "task_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("container_id", sa.String(128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outputs", JSON, nullable=True),
        timestamp("created_at", nullable=False),
        timestamp("started_at"),
        timestamp("ended_at"),
        sa.PrimaryKeyConstraint("id", name="pk_task_runs"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_task_runs_execution_id_executions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_task_runs_execution_id", "task_runs", ["execution_id"])

    op.create_table(
        "log_lines",
        sa.Column("id", BIG_KEY, autoincrement=True, nullable=False),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("task_run_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        timestamp("time", nullable=False),
        sa.Column("stream", sa.String(6), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log_lines"),
        sa.ForeignKeyConstraint(
            ["task_run_id"],
            ["task_runs.id"],
            name="fk_log_lines_task_run_id_task_runs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_log_lines_execution_id_id", "log_lines", ["execution_id", "id"])


def downgrade() -> None:
    op.drop_table("log_lines")
    op.drop_table("task_runs")
    op.drop_table("executions")
