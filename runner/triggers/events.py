"""What made a trigger fire, as an execution keeps it: `trigger.*` for its templates, its
labels, and the key that makes a time fire once.

    event = TriggerEvent.scheduled("nightly", scheduled_time)
    event.template_values()   # {"id": "nightly", "type": "schedule", "date": "2024-...", ...}
    event.labels()            # {"trigger": "nightly", "scheduled_at": "2024-...Z"}
    event.fire_key            # "2024-03-31T01:00:00Z": unique per flow and trigger

The key is what the database keeps unique per (namespace, flow, trigger): a scheduled
time in UTC for a schedule or a backfill (so a time runs once, whoever fires it), the
upstream execution's id for a flow trigger (so each upstream execution starts one), none
for a webhook (every call starts an execution). Pure values; nothing here fires anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["TRIGGER_FIELDS", "TriggerEvent", "utc_key"]

TriggerType = Literal["schedule", "webhook", "flow"]

TRIGGER_FIELDS = (
    "id",
    "type",
    "date",
    "backfill",
    "body",
    "headers",
    "execution_id",
    "namespace",
    "flow_id",
    "state",
    "outputs",
)
"""What templates may read as `trigger.X` (those that do not apply to a trigger's type
are null, or empty)."""

LABEL_TRIGGER = "trigger"
LABEL_SCHEDULED_AT = "scheduled_at"


def utc_key(moment: datetime) -> str:
    """A time as the fire key and label write it: ISO 8601 in UTC, `Z`, to the
    microsecond only when it has one (`2024-03-31T01:00:00Z`)."""
    if moment.tzinfo is None:
        raise ValueError(f"a scheduled time must be timezone-aware, got {moment.isoformat()}")
    utc = moment.astimezone(UTC)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


@dataclass(frozen=True)
class TriggerEvent:
    """One firing of a trigger."""

    trigger_id: str
    type: TriggerType
    date: datetime
    """The scheduled time (aware, in the trigger's zone) or, for a webhook or a flow
    trigger, when it fired."""
    backfill: bool = False
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    upstream: Mapping[str, Any] = field(default_factory=dict)
    """A flow trigger's upstream execution: execution_id, namespace, flow_id, state, outputs."""

    @classmethod
    def scheduled(cls, trigger_id: str, when: datetime, *, backfill: bool = False) -> TriggerEvent:
        return cls(trigger_id, "schedule", when, backfill=backfill)

    @property
    def fire_key(self) -> str | None:
        if self.type == "schedule":
            return utc_key(self.date)
        if self.type == "flow":
            return str(self.upstream.get("execution_id") or "") or None
        return None

    @property
    def scheduled_at(self) -> datetime | None:
        """The scheduled time in UTC (schedules and backfills only)."""
        return self.date.astimezone(UTC) if self.type == "schedule" else None

    def labels(self) -> dict[str, str]:
        labels = {LABEL_TRIGGER: self.trigger_id}
        if self.type == "schedule":
            labels[LABEL_SCHEDULED_AT] = utc_key(self.date)
        return labels

    def template_values(self) -> dict[str, Any]:
        """`trigger.*` as templates see it: the date as ISO 8601 in the trigger's zone."""
        return {
            "id": self.trigger_id,
            "type": self.type,
            "date": self.date.isoformat(),
            "backfill": self.backfill,
            "body": self.body,
            "headers": dict(self.headers),
            "execution_id": self.upstream.get("execution_id"),
            "namespace": self.upstream.get("namespace"),
            "flow_id": self.upstream.get("flow_id"),
            "state": self.upstream.get("state"),
            "outputs": dict(self.upstream.get("outputs") or {}),
        }

    def to_json(self) -> dict[str, Any]:
        """What the store keeps with the execution (`from_json` reads it back)."""
        return {
            "id": self.trigger_id,
            "type": self.type,
            "date": self.date.isoformat(),
            "backfill": self.backfill,
            "body": self.body,
            "headers": dict(self.headers),
            "upstream": dict(self.upstream),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TriggerEvent:
        return cls(
            trigger_id=str(data["id"]),
            type=data["type"],
            date=datetime.fromisoformat(str(data["date"])),
            backfill=bool(data.get("backfill", False)),
            body=data.get("body"),
            headers=dict(data.get("headers") or {}),
            upstream=dict(data.get("upstream") or {}),
        )
