"""Artifacts: the files task runs copy out of the workspace, with size and sha256.

Task outputs need no change: `task_runs.outputs` (JSON) is in 0001 already.

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from models.py (see 0001).
BIG_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", BIG_KEY, autoincrement=True, nullable=False),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("task_run_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("local_path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_artifacts_execution_id_executions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_run_id"],
            ["task_runs.id"],
            name="fk_artifacts_task_run_id_task_runs",
            ondelete="CASCADE",
        ),
    )
    # Listing an execution's artifacts (optionally of one task) reads this index; the
    # one on task_run_id keeps the cascade from a deleted task run from scanning.
    op.create_index("ix_artifacts_execution_id_task_id", "artifacts", ["execution_id", "task_id"])
    op.create_index("ix_artifacts_task_run_id", "artifacts", ["task_run_id"])


def downgrade() -> None:
    op.drop_table("artifacts")
