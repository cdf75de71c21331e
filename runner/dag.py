"""Pure planning: which task waits for which, checked for cycles before anything runs.

If no task declares `depends_on`, tasks run one after another in file order (as in Kestra
and Woodpecker). Once any task declares it, the flow is a DAG and only declared edges count.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.errors import CycleError
from runner.flow import Flow

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Plan:
    """The tasks of a flow in a stable order, with their edges both ways."""

    order: tuple[str, ...]
    upstream: Mapping[str, frozenset[str]]
    downstream: Mapping[str, frozenset[str]]

    def ready(self, done: Iterable[str], started: Iterable[str]) -> list[str]:
        """Tasks not yet started whose upstream tasks are all in `done`, in plan order."""
        done_set, started_set = set(done), set(started)
        return [
            t
            for t in self.order
            if t not in started_set and t not in done_set and self.upstream[t] <= done_set
        ]

    def descendants(self, task_id: str) -> set[str]:
        """Every task that directly or transitively depends on `task_id`."""
        seen: set[str] = set()
        stack = list(self.downstream[task_id])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.downstream[current])
        return seen


def is_sequential(flow: Flow) -> bool:
    return not any(task.depends_on for task in flow.tasks)


def find_problems(flow: Flow) -> list[tuple[Loc, str]]:
    """Every structural problem of the task graph, each with where it is in the file."""
    problems: list[tuple[Loc, str]] = []
    ids = [task.id for task in flow.tasks]
    seen: dict[str, int] = {}
    for index, task_id in enumerate(ids):
        if task_id in seen:
            problems.append(
                (
                    ("tasks", index, "id"),
                    f"duplicate task id {task_id!r} (first used by tasks[{seen[task_id]}])",
                )
            )
        else:
            seen[task_id] = index
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
    if problems:
        return problems
    cycle = find_cycle(_edges(flow))
    if cycle:
        index = ids.index(cycle[0])
        problems.append((("tasks", index, "depends_on"), "cycle: " + " -> ".join(cycle)))
    return problems


def build_plan(flow: Flow) -> Plan:
    """The plan of a flow already checked by `find_problems`; raises CycleError on a loop."""
    edges = _edges(flow)
    cycle = find_cycle(edges)
    if cycle:
        raise CycleError(cycle)
    order = tuple(task.id for task in flow.tasks)
    downstream: dict[str, set[str]] = {t: set() for t in order}
    for task_id, ups in edges.items():
        for up in ups:
            downstream[up].add(task_id)
    return Plan(
        order=order,
        upstream={t: frozenset(edges[t]) for t in order},
        downstream={t: frozenset(d) for t, d in downstream.items()},
    )


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
