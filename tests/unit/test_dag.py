"""The plan: file order when no task says `depends_on`, declared edges otherwise; cycles refused."""

from __future__ import annotations

import time
from typing import Any

import pytest

from runner.dag import Progress, build_plan, find_cycle, find_problems, is_sequential
from runner.errors import CycleError
from runner.flow import Flow
from runner.messages import did_you_mean


def flow(*tasks: dict[str, Any]) -> Flow:
    return Flow.model_validate({"id": "f", "tasks": [{"image": "i", **t} for t in tasks]})


def test_without_depends_on_tasks_run_one_after_another_in_file_order() -> None:
    f = flow({"id": "c"}, {"id": "a"}, {"id": "b"})
    assert is_sequential(f)
    plan = build_plan(f)
    assert plan.order == ("c", "a", "b")
    assert plan.upstream == {"c": frozenset(), "a": frozenset({"c"}), "b": frozenset({"a"})}
    assert plan.ready(done=[], started=[]) == ["c"]
    assert plan.ready(done=["c"], started=["c"]) == ["a"]
    assert plan.ready(done=["c", "a"], started=["c", "a"]) == ["b"]
    assert plan.descendants("c") == {"a", "b"}


def test_an_empty_depends_on_keeps_a_flow_sequential() -> None:
    assert is_sequential(flow({"id": "a", "depends_on": []}, {"id": "b"}))


def test_with_depends_on_only_declared_edges_count() -> None:
    f = flow(
        {"id": "extract"},
        {"id": "clean"},
        {"id": "transform", "depends_on": ["extract", "clean", "extract"]},
        {"id": "load", "depends_on": ["transform"]},
        {"id": "report", "depends_on": ["transform"]},
    )
    assert not is_sequential(f)
    plan = build_plan(f)
    assert plan.order == ("extract", "clean", "transform", "load", "report")
    assert plan.upstream["transform"] == {"extract", "clean"}
    assert plan.upstream["extract"] == frozenset()
    assert plan.downstream["transform"] == {"load", "report"}
    assert plan.downstream["report"] == frozenset()


def test_ready_lists_unstarted_tasks_whose_upstream_is_done_in_plan_order() -> None:
    plan = build_plan(
        flow(
            {"id": "a"},
            {"id": "b"},
            {"id": "c", "depends_on": ["a", "b"]},
            {"id": "d", "depends_on": ["a"]},
        )
    )
    assert plan.ready(done=[], started=[]) == ["a", "b"]
    assert plan.ready(done=[], started=["a"]) == ["b"]
    assert plan.ready(done=["a"], started=["a", "b"]) == ["d"]
    assert plan.ready(done=["a", "b"], started=["a", "b"]) == ["c", "d"]
    assert plan.ready(done=["a", "b", "c", "d"], started=["a", "b", "c", "d"]) == []


def test_progress_hands_out_ready_nodes_in_plan_order_whatever_order_they_became_ready() -> None:
    plan = build_plan(
        flow(
            {"id": "root"},
            {"id": "a", "depends_on": ["root"]},
            {"id": "b", "depends_on": ["root"]},
            {"id": "c", "depends_on": ["root"]},
            {"id": "x", "depends_on": ["c"]},
            {"id": "y", "depends_on": ["a"]},
        )
    )
    progress = Progress(plan)
    assert progress.take_ready(5) == ["root"]
    progress.succeeded("root")
    assert progress.take_ready(1) == ["a"]
    progress.claim(["b"])  # settled elsewhere (a pause task): never handed out
    progress.succeeded("c")  # x ready before y, listed after it
    progress.succeeded("a")
    assert progress.take_ready(0) == []
    assert progress.take_ready(10) == ["c", "x", "y"]
    assert progress.take_ready(10) == []


def test_the_graph_checked_at_load_is_the_one_planned() -> None:
    first = flow({"id": "a"}, {"id": "b", "depends_on": ["a"]})
    second = flow({"id": "a", "depends_on": ["b"]}, {"id": "b"})
    assert find_problems(first) == []
    assert build_plan(second).upstream == {"a": {"b"}, "b": frozenset()}
    assert build_plan(first).upstream == {"a": frozenset(), "b": {"a"}}
    looped = flow({"id": "a", "depends_on": ["b"]}, {"id": "b", "depends_on": ["a"]})
    with pytest.raises(CycleError):
        build_plan(looped)
    assert build_plan(first).order == ("a", "b")


def test_a_task_is_found_by_id_in_every_list_and_in_a_changed_copy() -> None:
    f = Flow.model_validate(
        {
            "id": "f",
            "tasks": [{"id": "a", "image": "i"}, {"id": "b", "image": "j"}],
            "finally": [{"id": "z", "image": "k"}],
        }
    )
    assert (f.task("a").image, f.task("b").image, f.task("z").image) == ("i", "j", "k")
    copy = f.model_copy(update={"tasks": (f.tasks[1],)})
    assert copy.task("b").image == "j"
    with pytest.raises(KeyError):
        copy.task("a")
    assert f.task("a").image == "i"


def test_descendants_are_transitive() -> None:
    plan = build_plan(
        flow(
            {"id": "a"},
            {"id": "b", "depends_on": ["a"]},
            {"id": "c", "depends_on": ["b"]},
            {"id": "d", "depends_on": ["a", "c"]},
            {"id": "other"},
        )
    )
    assert plan.descendants("a") == {"b", "c", "d"}
    assert plan.descendants("c") == {"d"}
    assert plan.descendants("d") == set()
    assert plan.descendants("other") == set()


def test_find_cycle() -> None:
    assert find_cycle({"a": [], "b": ["a"]}) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    # edges point upstream; the cycle is reported in the direction work flows
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) == ["a", "b", "c", "a"]
    # an edge to an unknown task is not a cycle (find_problems reports it)
    assert find_cycle({"a": ["ghost"]}) is None


def test_a_10000_task_chain_is_checked_fast_without_recursion() -> None:
    n = 10_000
    chain = {f"t{i}": ([f"t{i - 1}"] if i else []) for i in range(n)}
    started = time.monotonic()
    assert find_cycle(chain) is None
    chain["t0"] = [f"t{n - 1}"]
    cycle = find_cycle(chain)
    assert cycle is not None
    assert len(cycle) == n + 1 and cycle[0] == cycle[-1]
    assert time.monotonic() - started < 5


def test_a_10000_task_flow_plans_and_reports_its_cycle() -> None:
    n = 10_000
    tasks = [{"id": f"t{i}", "depends_on": [f"t{(i - 1) % n}"]} for i in range(n)]
    f = flow(*tasks)
    problems = find_problems(f)
    assert len(problems) == 1
    loc, message = problems[0]
    assert loc == ("tasks", 0, "depends_on")
    assert message.startswith("cycle: t0 -> t1 -> t2 -> ") and message.endswith(" -> t9999 -> t0")
    with pytest.raises(CycleError) as caught:
        build_plan(f)
    assert len(caught.value.cycle) == n + 1
    tasks[0]["depends_on"] = []
    plan = build_plan(flow(*tasks))
    assert plan.descendants("t0") == {f"t{i}" for i in range(1, n)}


def test_find_problems_reports_duplicates_unknowns_and_self_dependencies() -> None:
    f = flow(
        {"id": "extract"},
        {"id": "load", "depends_on": ["extrct", "load"]},
        {"id": "extract", "depends_on": ["zzz"]},
    )
    assert find_problems(f) == [
        (("tasks", 2, "id"), "duplicate task id 'extract' (first used by tasks[0])"),
        (
            ("tasks", 1, "depends_on", 0),
            "task 'load' depends on unknown task 'extrct' (did you mean 'extract'?)",
        ),
        (("tasks", 1, "depends_on", 1), "task 'load' depends on itself"),
        (("tasks", 2, "depends_on", 0), "task 'extract' depends on unknown task 'zzz'"),
    ]


def test_find_problems_reports_a_cycle_at_its_first_task() -> None:
    f = flow(
        {"id": "start"},
        {"id": "a", "depends_on": ["start", "c"]},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["b"]},
    )
    assert find_problems(f) == [(("tasks", 1, "depends_on"), "cycle: a -> b -> c -> a")]
    with pytest.raises(CycleError) as caught:
        build_plan(f)
    assert str(caught.value) == "cycle: a -> b -> c -> a"
    assert caught.value.cycle == ("a", "b", "c", "a")


def test_a_valid_flow_has_no_problems() -> None:
    assert find_problems(flow({"id": "a"}, {"id": "b", "depends_on": ["a"]})) == []
    assert find_problems(flow({"id": "a"}, {"id": "b"})) == []


def test_did_you_mean() -> None:
    assert did_you_mean("extrct", ["extract", "load"]) == " (did you mean 'extract'?)"
    assert did_you_mean("zzz", ["extract", "load"]) == ""
    assert did_you_mean("x", []) == ""


# --- matrix values that would give two runs one name ------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            [1, "1"],
            "values 1 and '1' print alike (n=1) and would give two runs one name; keep one",
        ),
        ([True, "true"][::-1], None),  # YAML's true is a bool; 'true' a string: see below
        (
            ["a/b", "a_b"],
            "values 'a/b' and 'a_b' differ only in characters a container or folder name"
            " cannot hold (both become 'a_b'); make them differ in letters or digits",
        ),
        (["x y", "x?y"], "values 'x y' and 'x?y' differ only in characters"),
        (["2024", 2024], "values '2024' and 2024 print alike"),
    ],
)
def test_matrix_values_that_collide_are_refused(values: list[Any], message: str | None) -> None:
    f = Flow.model_validate(
        {"id": "f", "tasks": [{"id": "t", "image": "i", "matrix": {"n": values}}]}
    )
    found = find_problems(f)
    if message is None:  # true (a bool, printed `true`) and 'true' collide too
        printed = {str(v).lower() for v in f.tasks[0].matrix["n"]}  # type: ignore[index]
        assert bool(found) == (len(printed) == 1)
        return
    assert len(found) == 1
    loc, text = found[0]
    assert loc == ("tasks", 0, "matrix", "n", 1)
    assert text.startswith(message)


def test_combinations_that_print_alike_are_refused() -> None:
    f = Flow.model_validate(
        {
            "id": "f",
            "tasks": [
                {"id": "t", "image": "i", "matrix": {"a": ["1,b=2", "1"], "b": ["3", "2,b=3"]}}
            ],
        }
    )
    assert find_problems(f) == [
        (
            ("tasks", 0, "matrix"),
            "the runs of {a: '1,b=2', b: '3'} and {a: '1', b: '2,b=3'} would get the same"
            " name 't[a=1,b=2,b=3]'; change values holding ',', '=' or '_'",
        )
    ]


def test_a_run_name_longer_than_the_store_keeps_is_refused() -> None:
    fits = Flow.model_validate(
        {"id": "f", "tasks": [{"id": "t", "image": "i", "matrix": {"k": ["x" * 250]}}]}
    )
    assert find_problems(fits) == []  # t[k=xxx...]: 255 characters
    too_long = Flow.model_validate(
        {"id": "f", "tasks": [{"id": "t", "image": "i", "matrix": {"k": ["y", "x" * 251]}}]}
    )
    ((loc, message),) = find_problems(too_long)
    assert loc == ("tasks", 0, "matrix")
    assert message.endswith(
        "would have a name of 256 characters; at most 255 are kept: use shorter matrix"
        " values or keys"
    )
    assert len(message) < 200


def test_handlers_matrices_are_checked_too() -> None:
    f = Flow.model_validate(
        {
            "id": "f",
            "tasks": [{"id": "a", "image": "i"}],
            "finally": [{"id": "t", "image": "i", "matrix": {"n": [1, "1"]}}],
        }
    )
    assert [loc for loc, _ in find_problems(f)] == [("finally", 0, "matrix", "n", 1)]
