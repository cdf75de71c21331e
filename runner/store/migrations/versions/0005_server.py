"""What `runner serve` keeps: API tokens (SHA-256 digests), the flow revisions it loaded,
paused flows, where each trigger stands, one row per trigger firing (its key unique per
flow and trigger, so a scheduled time runs once across servers), what started an
execution (`executions.trigger`); and indexes for reading a long history page by page.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from models.py (see 0001).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("trigger", JSON, nullable=True))
    # The newest page of the history, and every page after a cursor: (created_at, id).
    op.create_index("ix_executions_created_at_id", "executions", ["created_at", "id"])
    # The same in one namespace, or in one state (FAILED): a filter that matches few
    # executions must not walk the whole history to fill a page.
    op.create_index(
        "ix_executions_namespace_created_at_id", "executions", ["namespace", "created_at", "id"]
    )
    op.create_index(
        "ix_executions_state_created_at_id", "executions", ["state", "created_at", "id"]
    )
    # A flow trigger reads its upstream flow's executions that ended since it last looked.
    op.create_index(
        "ix_executions_namespace_flow_id_ended_at",
        "executions",
        ["namespace", "flow_id", "ended_at"],
    )

    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("shown", sa.String(32), nullable=False),
        timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_api_tokens"),
        sa.UniqueConstraint("digest", name="uq_api_tokens_digest"),
    )
    op.create_table(
        "flow_revisions",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("flow_id", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(128), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        timestamp("loaded_at", nullable=False),
        sa.PrimaryKeyConstraint("namespace", "flow_id", "revision", name="pk_flow_revisions"),
    )
    op.create_table(
        "flow_pauses",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("flow_id", sa.String(255), nullable=False),
        timestamp("paused_at", nullable=False),
        sa.PrimaryKeyConstraint("namespace", "flow_id", name="pk_flow_pauses"),
    )
    op.create_table(
        "trigger_states",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("flow_id", sa.String(255), nullable=False),
        sa.Column("trigger_id", sa.String(255), nullable=False),
        timestamp("created_at", nullable=False),
        timestamp("last_at"),
        sa.Column("execution_id", sa.String(32), nullable=True),
        timestamp("fired_at"),
        timestamp("disabled_at"),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("namespace", "flow_id", "trigger_id", name="pk_trigger_states"),
    )
    op.create_table(
        "trigger_fires",
        sa.Column("id", BIG_KEY, autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("flow_id", sa.String(255), nullable=False),
        sa.Column("trigger_id", sa.String(255), nullable=False),
        sa.Column("fire_key", sa.String(64), nullable=False),
        timestamp("scheduled_at"),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("backfill", sa.Boolean(), nullable=False),
        timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_fires"),
        sa.UniqueConstraint(
            "namespace", "flow_id", "trigger_id", "fire_key", name="uq_trigger_fires_fire_key"
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name="fk_trigger_fires_execution_id_executions",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_trigger_fires_namespace_flow_id_trigger_id_scheduled_at",
        "trigger_fires",
        ["namespace", "flow_id", "trigger_id", "scheduled_at"],
    )
    op.create_index("ix_trigger_fires_execution_id", "trigger_fires", ["execution_id"])


def downgrade() -> None:
    op.drop_table("trigger_fires")
    op.drop_table("trigger_states")
    op.drop_table("flow_pauses")
    op.drop_table("flow_revisions")
    op.drop_table("api_tokens")
    op.drop_index("ix_executions_namespace_flow_id_ended_at", table_name="executions")
    op.drop_index("ix_executions_state_created_at_id", table_name="executions")
    op.drop_index("ix_executions_namespace_created_at_id", table_name="executions")
    op.drop_index("ix_executions_created_at_id", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("trigger")
