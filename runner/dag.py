"""Pure planning: which task waits for which, checked for cycles before anything runs.

If no task declares `depends_on`, tasks run one after another in file order (as in Kestra
and Woodpecker). Once any task declares it, the flow is a DAG and only declared edges count.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import re
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

from runner.errors import CycleError, Loc
from runner.flow import Flow, Task
from runner.messages import did_you_mean, shorten

MatrixCombination = Mapping[str, str | int | float | bool]

MAX_RUN_NAME = 255
"""The longest run name (`process[year=2019,month=1]`) the store keeps: its task_id column."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
"""Characters a container or folder name cannot hold; a run name has them replaced."""


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
    """Which nodes may start next, updated incrementally (O(edges) over a whole run).

    The ready nodes are a heap of their positions in the plan: taking the first few in
    plan order costs O(log n) each, where sorting the whole ready set at every take made
    a fan-out of 10,000 tasks quadratic.
    """

    def __init__(self, plan: Plan, *, done: Iterable[str] = ()) -> None:
        """`done`: nodes that already succeeded (a restart); never ready, and what waits
        on them only waits on the rest. It must hold every upstream of its nodes."""
        finished = set(done)
        self._plan = plan
        self._waiting_on = {
            n: sum(1 for u in plan.upstream[n] if u not in finished) for n in plan.order
        }
        self._position = {n: i for i, n in enumerate(plan.order)}
        # positions in plan order: already a heap
        self._ready: list[int] = [
            i for i, n in enumerate(plan.order) if n not in finished and self._waiting_on[n] == 0
        ]

    def take_ready(self, limit: int) -> list[str]:
        """Up to `limit` ready nodes, in plan order, removed from the ready set."""
        order, ready = self._plan.order, self._ready
        return [order[heapq.heappop(ready)] for _ in range(min(limit, len(ready)))]

    def claim(self, node_ids: Iterable[str]) -> None:
        """Take nodes out of the ready set without running them (pause tasks settled
        elsewhere); their dependents wait for `succeeded`."""
        claimed = {self._position[n] for n in node_ids if n in self._position}
        if claimed:
            self._ready = [i for i in self._ready if i not in claimed]
            heapq.heapify(self._ready)

    def succeeded(self, node_id: str) -> None:
        """Mark a node as done so that its dependents may become ready."""
        for child in self._plan.downstream[node_id]:
            self._waiting_on[child] -= 1
            if self._waiting_on[child] == 0:
                heapq.heappush(self._ready, self._position[child])


def task_id_of(node_id: str) -> str:
    """The task a node runs: `load[month=1]` runs task `load` (task ids have no `[`)."""
    return node_id.split("[", 1)[0]


def is_sequential(flow: Flow) -> bool:
    return not any(task.depends_on for task in flow.tasks)


def find_problems(flow: Flow) -> list[tuple[Loc, str]]:
    """Every structural problem of the task graph, each with where it is in the file."""
    problems: list[tuple[Loc, str]] = []
    lists = _task_lists(flow)
    every_id = [task.id for _, tasks in lists for task in tasks]
    if len(set(every_id)) < len(every_id):  # only then is it worth saying where
        seen: dict[str, str] = {}
        for key, tasks in lists:
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
        if task.id not in task.depends_on and known.issuperset(task.depends_on):
            continue  # nothing to report: skip the loop below (most tasks of a big flow)
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
    for key, tasks in lists:
        for index, task in enumerate(tasks):
            if task.matrix:
                problems.extend(_matrix_problems((key, index, "matrix"), task))
    for key, tasks in lists[1:]:
        for index, task in enumerate(tasks):
            if getattr(task, "is_pause", False):
                problems.append(
                    (
                        (key, index, "type"),
                        f"`{key}:` tasks cannot pause: they run once the execution has ended",
                    )
                )
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
    _, cycle = _graph(flow)
    if cycle:
        index = ids.index(cycle[0])
        problems.append((("tasks", index, "depends_on"), "cycle: " + " -> ".join(cycle)))
    return problems


def _matrix_problems(loc: Loc, task: Task) -> list[tuple[Loc, str]]:
    """Values that would give two runs of a matrix the same name (`1` and `"1"` print
    alike; `a/b` and `a_b` differ only in characters a container or folder name cannot
    hold), and run names longer than the store keeps."""
    assert task.matrix is not None  # only matrix tasks are asked about
    problems: list[tuple[Loc, str]] = []
    for name, values in task.matrix.items():
        printed: dict[str, int] = {}
        safe: dict[str, int] = {}
        for number, value in enumerate(values):
            label = _label(value)
            first = printed.setdefault(label, number)
            if first != number:
                problems.append(
                    (
                        (*loc, name, number),
                        f"values {_shown(values[first])} and {_shown(value)} print alike"
                        f" ({name}={shorten(label)}) and would give two runs one name;"
                        " keep one",
                    )
                )
                continue
            cleaned = _UNSAFE.sub("_", label)
            first = safe.setdefault(cleaned, number)
            if first != number:
                problems.append(
                    (
                        (*loc, name, number),
                        f"values {_shown(values[first])} and {_shown(value)} differ only in"
                        " characters a container or folder name cannot hold (both become"
                        f" {shorten(repr(cleaned))}); make them differ in letters or digits",
                    )
                )
    if problems:
        return problems
    # Values holding `,`, `=` or `_` can make two combinations of distinct values print
    # (or be cleaned) alike: `a=1,b=2` from a="1,b=2" or from a="1", b="2".
    seen: dict[str, int] = {}
    longest = ""
    nodes = _expand(task.id, task.matrix)
    for number, node in enumerate(nodes):
        if len(node.id) > len(longest):
            longest = node.id
        for form in dict.fromkeys((node.id, _UNSAFE.sub("_", node.id))):
            first = seen.setdefault(form, number)
            if first != number:
                combinations = " and ".join(_combination(nodes[n].matrix) for n in (first, number))
                problems.append(
                    (
                        loc,
                        f"the runs of {combinations} would get the same name"
                        f" {shorten(repr(form))}; change values holding ',', '=' or '_'",
                    )
                )
                return problems
    if len(longest) > MAX_RUN_NAME:
        problems.append(
            (
                loc,
                f"run {shorten(longest, 60)} would have a name of {len(longest)} characters;"
                f" at most {MAX_RUN_NAME} are kept: use shorter matrix values or keys",
            )
        )
    return problems


def _combination(matrix: MatrixCombination) -> str:
    return "{" + ", ".join(f"{key}: {_shown(value)}" for key, value in matrix.items()) + "}"


def _shown(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return shorten(repr(value))


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
    with collections_deferred():
        return _build_plan(flow)


def _build_plan(flow: Flow) -> Plan:
    edges, cycle = _graph(flow)
    if cycle:
        raise CycleError(cycle)
    # A task without a matrix is one node of the same id; only matrix tasks are expanded.
    # Nodes of one task share its upstream set, and nodes nothing waits for share one
    # empty downstream set: a big plan allocates (and the collector walks) less.
    nodes: dict[str, Node] = {}
    expanded: dict[str, list[str]] = {}
    for task in flow.tasks:
        if task.matrix:
            task_nodes = _expand(task.id, task.matrix)
            expanded[task.id] = [node.id for node in task_nodes]
            for node in task_nodes:
                nodes[node.id] = node
        else:
            nodes[task.id] = Node(id=task.id, task_id=task.id, matrix={})
    order = tuple(nodes)
    task_ups: dict[str, frozenset[str]] = {}
    upstream: dict[str, frozenset[str]] = {}
    for node in nodes.values():
        ups = task_ups.get(node.task_id)
        if ups is None:
            deps = edges[node.task_id]
            if expanded and any(dep in expanded for dep in deps):
                ups = frozenset(up for dep in deps for up in expanded.get(dep, (dep,)))
            else:
                ups = frozenset(deps)
            task_ups[node.task_id] = ups
        upstream[node.id] = ups
    waiting: dict[str, list[str]] = {}
    for node_id, ups in upstream.items():
        for up in ups:
            found = waiting.get(up)
            if found is None:
                waiting[up] = [node_id]
            else:
                found.append(node_id)
    none: frozenset[str] = frozenset()
    downstream = {n: frozenset(waiting[n]) if n in waiting else none for n in order}
    unknown = waiting.keys() - downstream.keys()
    if unknown:  # a dependency on a task not in the flow: find_problems reports it
        raise KeyError(min(unknown))
    return Plan(
        order=order,
        nodes=nodes,
        upstream=upstream,
        downstream=downstream,
        task_upstream=_TaskUpstream(lambda: edges),
    )


def task_upstream(flow: Flow) -> Mapping[str, AbstractSet[str]]:
    """`build_plan(flow).task_upstream` without the rest of the plan: task id -> every
    task it transitively waits for, each found when first asked. For a flow without
    cycles (checked by `find_problems`)."""
    return _TaskUpstream(lambda: _graph(flow)[0])


@contextmanager
def collections_deferred() -> Iterator[None]:
    """Hold the cyclic garbage collector back while a flow is read (`loader`) or planned.

    Both allocate objects for every task and key of a flow and free almost none of them,
    and make no reference cycles, so the collector's passes find nothing; yet they come
    every 700 allocations, and every few of them walk all that was allocated so far, or
    the whole heap: on a 10,000-task flow, about half of the time of each. Collection
    resumes afterwards and catches up in one pass. This touches no I/O and changes no
    result; it does change the process's collector for the time it runs.
    """
    if not gc.isenabled():  # someone turned it off: leave it as it is
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
    whose templates name `outputs.X` ever asks whether X is among them. The edges too
    are found (by `find_edges`) when first needed: a flow without such templates never
    needs them.
    """

    def __init__(self, find_edges: Callable[[], Mapping[str, tuple[str, ...]]]) -> None:
        self._find_edges = find_edges

    @cached_property
    def _edges(self) -> Mapping[str, tuple[str, ...]]:
        return self._find_edges()

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


_last_graph: tuple[weakref.ref[Flow], dict[str, tuple[str, ...]], list[str] | None] | None = None


def _graph(flow: Flow) -> tuple[dict[str, tuple[str, ...]], list[str] | None]:
    """The edges of `flow` (not to be changed) and a cycle among them, or None.

    Remembered for the last flow asked about, while it lives: loading a flow checks its
    graph (`find_problems`, and `task_upstream` for its templates) and running it plans
    it (`build_plan`), the same question of the same frozen flow, which on a
    10,000-task flow costs about a tenth of planning it.
    """
    global _last_graph
    last = _last_graph
    if last is not None and last[0]() is flow:
        return last[1], last[2]
    edges = _edges(flow)
    cycle = find_cycle(edges)
    _last_graph = (weakref.ref(flow), edges, cycle)
    return edges, cycle


def _edges(flow: Flow) -> dict[str, tuple[str, ...]]:
    """task -> the tasks it waits for."""
    if is_sequential(flow):
        ids = [task.id for task in flow.tasks]
        return {t: ((ids[i - 1],) if i else ()) for i, t in enumerate(ids)}
    return {
        task.id: deps if len(deps := task.depends_on) < 2 else tuple(dict.fromkeys(deps))
        for task in flow.tasks
    }


def find_cycle(edges: Mapping[str, Collection[str]]) -> list[str] | None:
    """A cycle as a closed path (`a -> b -> a`), or None. Deterministic: file order."""
    if _points_back(edges):
        return None
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


def _points_back(edges: Mapping[str, Collection[str]]) -> bool:
    """Whether every edge goes to a node listed earlier (or to an unknown one, which a
    cycle cannot pass through): then there is no cycle. Flows are mostly written that
    way, and this one pass is several times cheaper than the depth-first search."""
    listed: set[str] = set()
    for node, targets in edges.items():
        if not listed.issuperset(targets) and any(
            target in edges and target not in listed for target in targets
        ):
            return False
        listed.add(node)
    return True
