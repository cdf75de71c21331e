"""Pure planning: which task waits for which, checked for cycles before anything runs.

If no task declares `depends_on`, tasks run one after another in file order (as in Kestra
and Woodpecker). Once any task declares it, the flow is a DAG and only declared edges count.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from runner.errors import CycleError
from runner.flow import Flow, Task

Loc = tuple[str | int, ...]


MatrixCombination = Mapping[str, str | int | float | bool]


@dataclass(frozen=True)
class Node:
    """One task run of the plan: a task, or one combination of a task's matrix."""

    id: str  # `load`, or `process[year=2019,month=1]` for a matrix combination
    task_id: str
    matrix: MatrixCombination

    @property
    def matrix_label(self) -> str:
        return ",".join(f"{k}={_label(v)}" for k, v in self.matrix.items())


@dataclass(frozen=True)
class Plan:
    """The task runs of a flow in a stable order, with their edges both ways.

    A task with `matrix:` becomes one node per combination; a task depending on it waits
    for all of them.
    """

    order: tuple[str, ...]
    nodes: Mapping[str, Node]
    upstream: Mapping[str, frozenset[str]]
    downstream: Mapping[str, frozenset[str]]
    task_upstream: Mapping[str, AbstractSet[str]]  # task id -> every task it transitively waits for

    def nodes_of(self, task_id: str) -> list[str]:
        return [n for n in self.order if self.nodes[n].task_id == task_id]

    def ready(self, done: Iterable[str], started: Iterable[str]) -> list[str]:
        """Nodes not yet started whose upstream nodes are all in `done`, in plan order."""
        done_set, started_set = set(done), set(started)
        return [
            n
            for n in self.order
            if n not in started_set and n not in done_set and self.upstream[n] <= done_set
        ]

    def descendants(self, node_id: str) -> set[str]:
        """Every node that directly or transitively depends on `node_id`."""
        seen: set[str] = set()
        stack = list(self.downstream[node_id])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.downstream[current])
        return seen


class Progress:
    """Which nodes may start next, updated incrementally (O(edges) over a whole run)."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._waiting_on = {n: len(plan.upstream[n]) for n in plan.order}
        self._ready: list[str] = [n for n in plan.order if not plan.upstream[n]]
        self._position = {n: i for i, n in enumerate(plan.order)}

    def take_ready(self, limit: int) -> list[str]:
        """Up to `limit` ready nodes, in plan order, removed from the ready set."""
        self._ready.sort(key=self._position.__getitem__)
        taken, self._ready = self._ready[:limit], self._ready[limit:]
        return taken

    def succeeded(self, node_id: str) -> None:
        """Mark a node as done so that its dependents may become ready."""
        for child in self._plan.downstream[node_id]:
            self._waiting_on[child] -= 1
            if self._waiting_on[child] == 0:
                self._ready.append(child)


def is_sequential(flow: Flow) -> bool:
    return not any(task.depends_on for task in flow.tasks)


def find_problems(flow: Flow) -> list[tuple[Loc, str]]:
    """Every structural problem of the task graph, each with where it is in the file."""
    problems: list[tuple[Loc, str]] = []
    seen: dict[str, str] = {}
    for key, tasks in _task_lists(flow):
        for index, task in enumerate(tasks):
            if task.id in seen:
                problems.append(
                    (
                        (key, index, "id"),
                        f"duplicate task id {task.id!r} (first used by {seen[task.id]})",
                    )
                )
            else:
                seen[task.id] = f"{key}[{index}]"
    ids = [task.id for task in flow.tasks]
    known = set(ids)
    for index, task in enumerate(flow.tasks):
        for dep_index, dep in enumerate(task.depends_on):
            if dep == task.id:
                problems.append(
                    (
                        (("tasks", index, "depends_on", dep_index)),
                        f"task {task.id!r} depends on itself",
                    )
                )
            elif dep not in known:
                problems.append(
                    (
                        ("tasks", index, "depends_on", dep_index),
                        f"task {task.id!r} depends on unknown task {dep!r}{did_you_mean(dep, known)}",
                    )
                )
    for key, tasks in _task_lists(flow)[1:]:
        for index, task in enumerate(tasks):
            if task.depends_on:
                named = [d for d in task.depends_on if d in known]
                why = (
                    f"they run after all of `tasks`, so {named[0]!r} has already ended"
                    if named
                    else "they run one after another in file order"
                )
                problems.append(
                    ((key, index, "depends_on"), f"`{key}:` tasks cannot use depends_on: {why}")
                )
    if problems:
        return problems
    cycle = find_cycle(_edges(flow))
    if cycle:
        index = ids.index(cycle[0])
        problems.append((("tasks", index, "depends_on"), "cycle: " + " -> ".join(cycle)))
    return problems


def _task_lists(flow: Flow) -> list[tuple[str, tuple[Task, ...]]]:
    # getattr: a graph-only Flow made with model_construct may lack the handler lists
    return [
        ("tasks", flow.tasks),
        ("errors", getattr(flow, "errors", ())),
        ("finally", getattr(flow, "finally_", ())),
    ]


def build_handler_plan(tasks: Iterable[Task]) -> Plan:
    """The plan of `errors:` or `finally:` tasks: no edges, so run one at a time they go
    in file order and each runs whatever the ones before it did."""
    nodes = {node.id: node for task in tasks for node in _expand(task.id, task.matrix)}
    order = tuple(nodes)
    none: frozenset[str] = frozenset()
    return Plan(
        order=order,
        nodes=nodes,
        upstream=dict.fromkeys(order, none),
        downstream=dict.fromkeys(order, none),
        task_upstream={node.task_id: none for node in nodes.values()},
    )


def build_plan(flow: Flow) -> Plan:
    """The plan of a flow already checked by `find_problems`; raises CycleError on a loop."""
    edges = _edges(flow)
    cycle = find_cycle(edges)
    if cycle:
        raise CycleError(cycle)
    expansions = {task.id: _expand(task.id, task.matrix) for task in flow.tasks}
    nodes = {node.id: node for task in flow.tasks for node in expansions[task.id]}
    order = tuple(nodes)
    upstream = {
        node.id: frozenset(up.id for dep in edges[node.task_id] for up in expansions[dep])
        for node in nodes.values()
    }
    downstream: dict[str, set[str]] = {n: set() for n in order}
    for node_id, ups in upstream.items():
        for up in ups:
            downstream[up].add(node_id)
    return Plan(
        order=order,
        nodes=nodes,
        upstream=upstream,
        downstream={n: frozenset(d) for n, d in downstream.items()},
        task_upstream=_TaskUpstream(edges),
    )


def _expand(
    task_id: str, matrix: Mapping[str, tuple[str | int | float | bool, ...]] | None
) -> list[Node]:
    if not matrix:
        return [Node(id=task_id, task_id=task_id, matrix={})]
    keys = list(matrix)
    nodes = []
    for values in itertools.product(*(matrix[k] for k in keys)):
        combination = dict(zip(keys, values, strict=True))
        label = ",".join(f"{k}={_label(v)}" for k, v in combination.items())
        nodes.append(Node(id=f"{task_id}[{label}]", task_id=task_id, matrix=combination))
    return nodes


def _label(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _TaskUpstream(Mapping[str, AbstractSet[str]]):
    """task -> every task it waits for, directly or not; each set is found when first used.

    Building every closure up front costs tasks x ancestors in time and memory (10,000
    tasks: seconds, and sets that slow every later garbage collection), while only a task
    whose templates name `outputs.X` ever asks whether X is among them.
    """

    def __init__(self, edges: Mapping[str, tuple[str, ...]]) -> None:
        self._edges = edges

    def __getitem__(self, task_id: str) -> AbstractSet[str]:
        if task_id not in self._edges:
            raise KeyError(task_id)
        return _Ancestors(self._edges, task_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._edges)

    def __len__(self) -> int:
        return len(self._edges)


class _Ancestors(AbstractSet[str]):
    """The tasks `task_id` transitively waits for, walked on first use."""

    def __init__(self, edges: Mapping[str, tuple[str, ...]], task_id: str) -> None:
        self._edges = edges
        self._task_id = task_id
        self._found: frozenset[str] | None = None

    def _all(self) -> frozenset[str]:
        if self._found is None:
            seen: set[str] = set()
            stack = list(self._edges[self._task_id])
            while stack:
                current = stack.pop()
                if current not in seen:
                    seen.add(current)
                    stack.extend(self._edges[current])
            self._found = frozenset(seen)
        return self._found

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _edges(flow: Flow) -> dict[str, tuple[str, ...]]:
    """task -> the tasks it waits for."""
    if is_sequential(flow):
        ids = [task.id for task in flow.tasks]
        return {t: ((ids[i - 1],) if i else ()) for i, t in enumerate(ids)}
    return {task.id: tuple(dict.fromkeys(task.depends_on)) for task in flow.tasks}


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a closed path (`a -> b -> a`), or None. Deterministic: file order."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for root in edges:
        if color[root] != white:
            continue
        # Iterative DFS so a 10,000-task chain does not hit the recursion limit.
        path: list[str] = [root]
        iters = [iter(edges[root])]
        color[root] = grey
        while path:
            advanced = False
            for nxt in iters[-1]:
                if nxt not in color:
                    continue
                if color[nxt] == grey:
                    start = path.index(nxt)
                    # Edges point upstream; report the cycle in the direction work flows.
                    return list(reversed([*path[start:], nxt]))
                if color[nxt] == white:
                    color[nxt] = grey
                    path.append(nxt)
                    iters.append(iter(edges[nxt]))
                    advanced = True
                    break
            if not advanced:
                color[path.pop()] = black
                iters.pop()
    return None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a near miss, else an empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
