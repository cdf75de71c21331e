"""The flow file as validated, immutable models: what users write, nothing they did not.

Only validation lives here; reading files and mapping errors to lines is `loader`'s job,
and ordering tasks is `dag`'s.
"""

from __future__ import annotations

import functools
import random
import re
import shlex
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from runner.durations import MAX_DURATION, Duration, MemorySize
from runner.messages import shorten
from runner.triggers.models import Trigger
from runner.values import InputType, coerce_value

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=200)]


def _scalar_to_str(value: Any) -> Any:
    """YAML reads `DEBUG: 1` as an int and `ON: true` as a bool; containers only take strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class FlowInput(_Model):
    """A typed value given at run time with `-i id=value`."""

    id: Identifier
    type: InputType = InputType.STRING
    description: str | None = None
    required: bool | None = None
    default: Any = None
    values: tuple[str, ...] | None = None
    item_type: InputType | None = None

    @model_validator(mode="after")
    def _check(self) -> FlowInput:
        enum_like = self.type is InputType.ENUM or self.item_type is InputType.ENUM
        if enum_like and not self.values:
            raise ValueError("an enum input needs `values`, the list of accepted values")
        if not enum_like and self.values is not None:
            raise ValueError("`values` only applies to inputs of type enum (or arrays of enum)")
        if self.item_type is not None and self.type is not InputType.ARRAY:
            raise ValueError("`item_type` only applies to inputs of type array")
        if self.item_type in (InputType.ARRAY, InputType.FILE, InputType.SECRET):
            raise ValueError(f"an array cannot hold items of type {self.item_type.value}")
        if self.type is InputType.SECRET and self.default is not None:
            raise ValueError(
                "a secret input cannot have a default: the flow file is stored with every"
                f" execution; give it with -i {self.id}=VALUE, or read it with"
                " {{ secret('NAME') }}"
            )
        if self.default is not None:
            try:
                coerce_value(self.type, self.default, self.values, self.item_type)
            except ValueError as exc:
                raise ValueError(f"default: {exc}") from exc
        return self

    @property
    def is_required(self) -> bool:
        """Required unless it has a default or says `required: false` (as in Kestra)."""
        if self.required is not None:
            return self.required and self.default is None
        return self.default is None


class PullPolicy(StrEnum):
    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


VOLUME_RE = re.compile(r"^(?P<source>.+?):(?P<target>/[^:]*)(?::(?P<mode>ro|rw))?$")
NAMED_VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_volume(spec: str) -> str:
    """Reject a volume string that is not `source:/target[:ro|rw]`.

    The source may be a Windows path with a drive letter (`C:/Users/me/Data Engg`), so the
    split is on the last colon that starts an absolute container path.
    """
    if not VOLUME_RE.match(spec):
        raise ValueError(
            f"volume {shorten(repr(spec))} is not SOURCE:/TARGET[:ro|rw]; SOURCE is a named volume "
            "or a path (relative to the flow file), TARGET an absolute path in the container"
        )
    return spec


# After, not before, str validation: `volumes: [5]` must be a type error, not a crash in re.
VolumeSpec = Annotated[str, AfterValidator(check_volume)]


class ConcurrencyBehavior(StrEnum):
    QUEUE = "queue"  # wait in state QUEUED for a slot
    CANCEL = "cancel"  # end at once in state CANCELLED
    FAIL = "fail"  # end at once in state FAILED


def _lower(value: Any) -> Any:
    # Kestra writes QUEUE / CANCEL / FAIL
    return value.lower() if isinstance(value, str) else value


class Concurrency(_Model):
    """`concurrency:` of a flow. `limit`: most executions of this flow running at once,
    across every process sharing the database, and `behavior` for one over the limit.
    `tasks`: most tasks of one execution running at once. A bare number is `tasks`."""

    # strict: YAML's `limit: yes` is a bool, which lax mode would take as 1
    limit: int | None = Field(default=None, ge=1, strict=True)
    behavior: Annotated[ConcurrencyBehavior, BeforeValidator(_lower)] = ConcurrencyBehavior.QUEUE
    tasks: int | None = Field(default=None, ge=1, strict=True)


def _concurrency_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(
            f"expected a number of tasks or a mapping with limit, behavior, tasks;"
            f" got {str(value).lower()}"
        )
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return {"tasks": value}
    return value


class Retry(_Model):
    """How often and how soon a failed task is tried again (`attempts` counts the first).

    An attempt that was killed (Ctrl-C, or stopped because the execution timed out) is
    never retried. With `on_exit_codes`, only those exit codes are retried: a timed-out
    attempt or a container that could not start has no exit code of its own, so the list
    excludes them; without it every failure is retried.
    """

    attempts: int = Field(ge=1, le=100, strict=True)
    delay: Duration = Duration.parse("1s")
    backoff: float = Field(default=1.0, ge=1.0, le=100.0)
    max_delay: Duration | None = None
    jitter: bool = False
    on_exit_codes: tuple[Annotated[int, Field(strict=True)], ...] | None = Field(
        default=None, min_length=1
    )

    def retries(self, attempt: int, exit_code: int | None) -> bool:
        """Whether a failed `attempt` (1-based) is followed by another one."""
        if attempt >= self.attempts:
            return False
        return self.on_exit_codes is None or exit_code in self.on_exit_codes

    def delay_after(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed `attempt` (1-based): delay * backoff**(attempt-1),
        at most max_delay; with jitter a random time between 0 and that ("full jitter")."""
        seconds = self.delay.seconds * self.backoff ** (attempt - 1)
        # Without max_delay, a backoff grows past what a wait accepts (threading.TIMEOUT_MAX).
        max_delay = self.max_delay.delta if self.max_delay is not None else MAX_DURATION
        seconds = min(seconds, max_delay.total_seconds())
        return seconds * rand() if self.jitter else seconds


def _positive(value: Duration | None) -> Duration | None:
    if value is not None and value.seconds <= 0:
        raise ValueError(f"a timeout must be longer than zero, not {shorten(repr(value.text))}")
    return value


Timeout = Annotated[Duration | None, AfterValidator(_positive)]

# Fields of a task that `defaults:` may set. `image`/`build` and `script`/`command` are
# pairs: a task that sets one member of a pair does not inherit the other from defaults.
_EXCLUSIVE_PAIRS = (("image", "build"), ("script", "command"))


class _TaskFields(_Model):
    description: str | None = None
    image: str | None = Field(default=None, min_length=1)
    build: str | None = Field(default=None, min_length=1)
    pull: PullPolicy = PullPolicy.MISSING
    script: str | None = None
    interpreter: str | tuple[str, ...] = "/bin/sh -e"
    command: str | tuple[str, ...] | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    volumes: tuple[VolumeSpec, ...] = ()
    working_dir: str = "/workspace"
    user: str | None = None
    network: str | None = Field(default=None, min_length=1)
    retry: Retry | None = None
    timeout: Timeout = None  # per attempt
    allow_failure: bool = False
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: MemorySize | None = None
    # false: no /workspace (neither the flow's files nor other tasks' files), so that a
    # multi-host backend may run the task on any node; the Docker backend runs it alike
    workspace: bool = Field(default=True, strict=True)

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | None):
            raise ValueError(f"cpus must be a number like 1 or 1.5, not {shorten(repr(value))}")
        return value

    @field_validator("working_dir")
    @classmethod
    def _absolute_working_dir(cls, value: str) -> str:
        if not value.startswith("/") and not value.startswith("{{"):
            raise ValueError(
                f"working_dir must be an absolute path in the container, not {shorten(repr(value))}"
            )
        return value


class TaskDefaults(_TaskFields):
    """What `defaults:` may set: every task field but `id` and `depends_on`."""


@functools.lru_cache(maxsize=256)
def _split_words(text: str) -> tuple[str, ...]:
    """shlex.split, remembered: every task of a big flow checks the same interpreter."""
    return tuple(shlex.split(text))


MatrixValue = Annotated[str | int | float | bool, Field(union_mode="left_to_right")]
MAX_MATRIX_COMBINATIONS = 1000


def check_artifact_pattern(pattern: str) -> str:
    """Artifacts are globs under /workspace: `out/*.csv` or `/workspace/out/*.csv`."""
    relative = pattern.removeprefix("/workspace/") if pattern.startswith("/workspace/") else pattern
    if not relative or relative.startswith("/") or ".." in relative.split("/"):
        raise ValueError(
            f"artifact {shorten(repr(pattern))} must be a glob under /workspace, like 'out/*.csv'"
        )
    return relative


ArtifactPattern = Annotated[str, AfterValidator(check_artifact_pattern)]


class TaskType(StrEnum):
    CONTAINER = "container"  # the default: a command in a container
    PAUSE = "pause"  # wait for a person (`runner resume`) or for `timeout`


class OnTimeout(StrEnum):
    FAIL = "fail"  # the pause task fails: what depends on it is skipped
    RESUME = "resume"  # the execution goes on, inputs at their defaults


# What a pause task may set: it runs no container, so no field of one applies.
_PAUSE_FIELDS = frozenset(
    {"id", "type", "description", "depends_on", "when", "timeout", "on_timeout", "inputs"}
)


class Task(_TaskFields):
    """A task of `tasks:`, `errors:` or `finally:`.

    `type: pause` holds the execution in state PAUSED until it is resumed (`runner
    resume EXECUTION -i NAME=VALUE`, the API) or its `timeout` passes (`on_timeout`:
    fail, the default, or resume). Its `inputs` are what a resume may give: they become
    the task's outputs (`{{ outputs.approve.reason }}`).
    """

    id: Identifier
    type: Annotated[TaskType, BeforeValidator(_lower)] = TaskType.CONTAINER
    on_timeout: Annotated[OnTimeout, BeforeValidator(_lower)] | None = None
    inputs: tuple[FlowInput, ...] = ()
    depends_on: tuple[str, ...] = ()
    when: str | None = Field(default=None, min_length=1)
    matrix: (
        dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], tuple[MatrixValue, ...]]
        | None
    ) = None
    artifacts: tuple[ArtifactPattern, ...] = ()

    @field_validator("matrix")
    @classmethod
    def _check_matrix(
        cls, value: dict[str, tuple[str | int | float | bool, ...]] | None
    ) -> dict[str, tuple[str | int | float | bool, ...]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("matrix needs at least one key with a list of values")
        combinations = 1
        for key, values in value.items():
            if not values:
                raise ValueError(f"matrix key {key!r} has no values")
            combinations *= len(values)
        if combinations > MAX_MATRIX_COMBINATIONS:
            raise ValueError(
                f"matrix expands to {combinations} task runs; at most {MAX_MATRIX_COMBINATIONS} are allowed"
            )
        return value

    @property
    def is_pause(self) -> bool:
        return self.type is TaskType.PAUSE

    @model_validator(mode="after")
    def _check(self) -> Task:
        if self.is_pause:
            return self._check_pause()
        if self.on_timeout is not None:
            raise ValueError("`on_timeout` only applies to tasks of type pause")
        if self.inputs:
            raise ValueError("`inputs` only applies to tasks of type pause")
        if self.image is None and self.build is None:
            raise ValueError(
                "give either `image` (an image reference) or `build` (a folder with a Dockerfile)"
            )
        if self.image is not None and self.build is not None:
            raise ValueError("give either `image` or `build`, not both")
        if self.script is not None and self.command is not None:
            raise ValueError("give either `script` or `command`, not both")
        if isinstance(self.interpreter, str):
            # checked here, not when the container starts: `python 'x` must fail at load
            try:
                words = _split_words(self.interpreter)
            except ValueError as exc:
                raise ValueError(
                    f"interpreter {shorten(repr(self.interpreter))} cannot be split into words: {exc}"
                ) from exc
            if not words:
                raise ValueError("interpreter must not be empty")
        if isinstance(self.interpreter, tuple) and not self.interpreter:
            raise ValueError("interpreter must not be empty")
        if isinstance(self.command, tuple) and not self.command:
            raise ValueError("command must not be an empty list")
        if self.artifacts and not self.workspace:
            raise ValueError(
                "artifacts are copied out of the workspace, which `workspace: false` removes:"
                " drop one of the two"
            )
        return self

    def _check_pause(self) -> Task:
        extra = sorted(self.model_fields_set - _PAUSE_FIELDS)
        if extra:
            fields = ", ".join(f"`{name}`" for name in extra)
            raise ValueError(
                f"a pause task runs no container: remove {fields} (it may set description,"
                " depends_on, when, timeout, on_timeout and inputs)"
            )
        ids = [spec.id for spec in self.inputs]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"input {repeated[0]!r} is declared twice")
        if any(spec.type is InputType.FILE for spec in self.inputs):
            raise ValueError("a pause task's inputs cannot be files (they become outputs)")
        return self


class Flow(_Model):
    id: Identifier
    namespace: Identifier = "default"
    description: str | None = None
    labels: dict[str, EnvValue] = Field(default_factory=dict)
    inputs: tuple[FlowInput, ...] = ()
    env: dict[str, EnvValue] = Field(default_factory=dict)
    concurrency: Annotated[Concurrency, BeforeValidator(_concurrency_number)] = Concurrency()
    defaults: TaskDefaults | None = None
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Any] = Field(
        default_factory=dict
    )
    allowed_env: tuple[str, ...] = ()
    files: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    timeout: Timeout = None  # the whole execution, `errors:` and `finally:` aside
    # What starts the flow without a person; ids are checked unique by the loader.
    triggers: tuple[Trigger, ...] = ()
    tasks: tuple[Task, ...] = Field(min_length=1)
    errors: tuple[Task, ...] = ()
    # `finally` is a Python keyword, hence the alias.
    finally_: tuple[Task, ...] = Field(default=(), alias="finally")

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """Apply `defaults:` to every task before tasks are validated."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults")
        if not isinstance(defaults, dict):
            return data
        merged_lists = {}
        for key in ("tasks", "errors", "finally"):
            tasks = data.get(key)
            if isinstance(tasks, list):
                merged_lists[key] = cls._with_defaults(defaults, tasks)
        return {**data, **merged_lists}

    @staticmethod
    def _with_defaults(defaults: dict[str, Any], tasks: list[Any]) -> list[Any]:
        everything = {k: v for k, v in defaults.items() if k not in ("id", "depends_on")}
        # A task that sets a member of a pair inherits neither from defaults; a pair
        # defaults does not touch changes nothing. What a task inherits is worked out once
        # per choice of pairs, not once per task (a flow may have thousands).
        pairs = [pair for pair in _EXCLUSIVE_PAIRS if any(key in everything for key in pair)]
        paired = {key for pair in pairs for key in pair}
        inherited_for: dict[frozenset[str], dict[str, Any]] = {}
        default_env = defaults.get("env")
        merged = []
        for task in tasks:
            if not isinstance(task, dict) or _lower(task.get("type")) == TaskType.PAUSE:
                # A pause task runs no container: container defaults do not apply to it.
                merged.append(task)
                continue
            inherited = everything
            if not paired.isdisjoint(task):
                left_out = frozenset(
                    key
                    for pair in pairs
                    if any(task.get(member) is not None for member in pair)
                    for key in pair
                )
                if left_out:
                    found = inherited_for.get(left_out)
                    if found is None:
                        found = inherited_for[left_out] = {
                            k: v for k, v in everything.items() if k not in left_out
                        }
                    inherited = found
            combined = {**inherited, **task}
            if isinstance(default_env, dict) and isinstance(task.get("env"), dict):
                combined["env"] = {**default_env, **task["env"]}
            merged.append(combined)
        return merged

    @property
    def all_tasks(self) -> tuple[Task, ...]:
        """`tasks`, then `errors`, then `finally`."""
        return (*self.tasks, *self.errors, *self.finally_)

    def task(self, task_id: str) -> Task:
        """The task of that id, in `tasks`, `errors` or `finally` (the first, if several)."""
        (tasks, errors, finally_), by_id = self._tasks_by_id
        if tasks is not self.tasks or errors is not self.errors or finally_ is not self.finally_:
            # a copy made with `model_copy(update=...)` carries the original's index
            del self.__dict__["_tasks_by_id"]
            _, by_id = self._tasks_by_id
        return by_id[task_id]

    @functools.cached_property
    def _tasks_by_id(self) -> tuple[tuple[tuple[Task, ...], ...], dict[str, Task]]:
        """Task id -> task, made on first use: the scheduler looks a task up for every
        task run it starts and ends, and a scan of 10,000 tasks each time made a big
        flow's run quadratic. Kept with the lists it was made from."""
        by_id: dict[str, Task] = {}
        for task in self.all_tasks:
            by_id.setdefault(task.id, task)
        return (self.tasks, self.errors, self.finally_), by_id

    @property
    def full_id(self) -> str:
        return f"{self.namespace}.{self.id}"
