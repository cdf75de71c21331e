"""The `runner` command: arguments in, library calls, results printed, an exit code out.

Exit codes: 0 success, 1 a failed execution or a runtime error, 2 bad flow/input/flag,
130 interrupted. Errors print as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from runner.errors import FlowError, RunnerError
from runner.execution import ExecutionState
from runner.settings import (
    ARTIFACTS_DIR_ENV,
    DATABASE_URL_ENV,
    DEBUG_ENV,
    DEFAULT_ARTIFACTS_DIR,
    DEFAULT_FLOWS_DIR,
    DEFAULT_SERVE_GRACE,
    DEFAULT_SERVE_HOST,
    DEFAULT_SERVE_PORT,
    DEFAULT_SERVE_WORKERS,
    FLOWS_DIR_ENV,
    LOG_FORMAT_ENV,
    SERVE_HOST_ENV,
    SERVE_PORT_ENV,
    debug,
)

if TYPE_CHECKING:
    from rich.console import Console

    from runner.api import Info
    from runner.restart import RestartPlan
    from runner.store import ExecutionRecord, SchemaRevision, Store

# The CLI imports the library where each command needs it: `runner --help` must not pay
# for the engine's SDK, SQLAlchemy, pydantic or Jinja (tests/unit/test_architecture.py).

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXECUTION_STATES = [state.value for state in ExecutionState]
MAX_LIMIT = 10_000

F = TypeVar("F", bound=Callable[..., Any])

_STATE_STYLE = {
    "QUEUED": "blue",
    "CANCELLED": "magenta",
    "SUCCESS": "green",
    "FAILED": "red",
    "KILLED": "magenta",
    "WARNING": "yellow",
    "RETRYING": "yellow",
    "SKIPPED": "dim",
    "RUNNING": "cyan",
    "CREATED": "dim",
}


def _stdout() -> Console:
    from rich.console import Console

    # Piped output is for scripts and logs: never cut columns to an assumed 80-wide screen.
    width = None if sys.stdout.isatty() else 1000
    return Console(highlight=False, soft_wrap=True, width=width)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_url",
        envvar=DATABASE_URL_ENV,
        metavar="URL",
        help=f"SQLAlchemy database URL [env {DATABASE_URL_ENV}; default sqlite:///.runner/runner.db].",
    )(func)


def _flows_option(func: F) -> F:
    return click.option(
        "--flows",
        "flows_dir",
        envvar=FLOWS_DIR_ENV,
        default=DEFAULT_FLOWS_DIR,
        show_default=True,
        metavar="DIR",
        help=f"The folder of flow files [env {FLOWS_DIR_ENV}].",
    )(func)


def _execution_options(func: F) -> F:
    """The options `run` and `restart` share: how the execution runs and prints."""
    options = [
        click.option(
            "--concurrency",
            type=click.IntRange(min=1),
            help="Most tasks running at once (overrides the flow).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["console", "json"]),
            envvar=LOG_FORMAT_ENV,
            default="console",
            show_default=True,
            help="How events and task output are printed on stderr.",
        ),
        click.option(
            "--keep-workspace",
            is_flag=True,
            help="Keep the execution's workspace volume even after success.",
        ),
        click.option(
            "--env",
            "allow_env",
            multiple=True,
            metavar="NAME",
            # allows what a flow's allowed_env declares (globs too)
            help="Allow this variable of your environment (or a glob: 'AWS_*') for a flow that"
            " declares it in allowed_env; an exact name is also readable as {{ env.NAME }}."
            " Repeat for several [env RUNNER_ALLOWED_ENV].",
        ),
        click.option(
            "--artifacts-dir",
            type=click.Path(file_okay=False, path_type=str),
            envvar=ARTIFACTS_DIR_ENV,
            help=f"Where task artifacts are copied [env {ARTIFACTS_DIR_ENV}; default {DEFAULT_ARTIFACTS_DIR}].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _open_store(db_url: str | None) -> Store:
    """Open the database; the executions whose runner died are ended, and said so."""
    from runner import api

    return api.open_store(db_url, notify=_warn)


def _warn(message: str) -> None:
    click.echo(message, err=True)


def _configure_logs(
    log_format: str, *, task_width: int = 12, quiet: bool = False, task_output: bool = True
) -> None:
    from runner import logs

    logs.configure(
        "json" if log_format == "json" else "console",
        task_width=task_width,
        quiet=quiet,
        task_output=task_output,
    )


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="runner")
def cli() -> None:
    """Run YAML flows of containers and keep a record of every run."""
    # Commands that read the database print only warnings (a recovered execution);
    # `run` and `restart` configure their own output.
    _configure_logs("console", quiet=True)


@cli.command()
@click.argument("flow", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A flow input; repeat for several.",
)
@_db_option
@_execution_options
def run(
    flow: str,
    inputs: Sequence[str],
    db_url: str | None,
    concurrency: int | None,
    log_format: str,
    keep_workspace: bool,
    allow_env: Sequence[str],
    artifacts_dir: str | None,
) -> None:
    """Run FLOW (a YAML file) and wait for it to end."""
    from runner import api

    values = api.parse_input_args(inputs)
    loaded = api.load_flow(flow)
    width = max(12, *(len(name) for name in api.task_run_names(loaded)))
    _configure_logs(log_format, task_width=width)
    store = _open_store(db_url)
    try:

        def announce(execution_id: str) -> None:
            click.echo(f"execution {execution_id} ({loaded.flow.full_id})")

        result = api.run_flow(
            loaded,
            values,
            store=store,
            concurrency=concurrency,
            keep_workspace=keep_workspace,
            allow_env=allow_env,
            artifacts_dir=artifacts_dir,
            handle_signals=True,
            on_created=announce,
        )
        record = api.get_execution(store, result.execution_id)
    finally:
        store.close()
    _print_summary(record)
    _exit_for(result.state)


def _exit_for(state: ExecutionState) -> NoReturn:
    if state is ExecutionState.KILLED:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_OK if state in (ExecutionState.SUCCESS, ExecutionState.WARNING) else EXIT_FAILED)


@cli.command()
@click.argument("execution")
@click.option(
    "--from",
    "from_task",
    metavar="TASK",
    help="Also rerun TASK (and everything downstream of it), even if it succeeded.",
)
@_db_option
@_execution_options
def restart(
    execution: str,
    from_task: str | None,
    db_url: str | None,
    concurrency: int | None,
    log_format: str,
    keep_workspace: bool,
    allow_env: Sequence[str],
    artifacts_dir: str | None,
) -> None:
    """Run a FAILED or KILLED execution again from where it failed.

    The task runs that did not succeed, and everything downstream of them, get new
    attempts in the same execution; the others keep their outputs and their files in the
    kept workspace. EXECUTION may be a unique id prefix.
    """
    from runner import api

    _configure_logs(log_format)
    store = _open_store(db_url)
    try:

        def announce(execution_id: str, plan: RestartPlan) -> None:
            reused = len(plan.reused)
            gone = (
                " from its first task: its workspace is gone (removed by a kill or `runner gc`,"
                " or lost with its node), and the files of earlier tasks with it"
                if plan.workspace_gone
                else ""
            )
            click.echo(
                f"execution {execution_id}: rerunning {len(plan.rerun)} task run(s)"
                f"{f', reusing {reused}' if reused else ''}{gone}"
            )

        result = api.restart_execution(
            execution,
            from_task=from_task,
            store=store,
            concurrency=concurrency,
            keep_workspace=keep_workspace,
            allow_env=allow_env,
            artifacts_dir=artifacts_dir,
            handle_signals=True,
            on_restarted=announce,
        )
        record = api.get_execution(store, result.execution_id)
    finally:
        store.close()
    _print_summary(record)
    _exit_for(result.state)


@cli.command()
@click.argument("execution")
@_db_option
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    help="Seconds to wait for the execution to end [default: the lease time, 30 s, plus"
    " two heartbeats: long enough to take over from a runner that died elsewhere].",
)
def kill(execution: str, db_url: str | None, wait_s: float | None) -> None:
    """Kill a running or queued execution, from any machine sharing the database.

    The process running it stops its containers and records KILLED; if that process is
    gone, this command does it. EXECUTION may be a unique id prefix.
    """
    from runner import api

    # No recovery on opening: kill_execution takes over from a dead runner itself.
    store = api.open_store(db_url, recover=False)
    try:
        record = api.get_execution(store, execution)
        if record.state.is_final:
            _fail(f"execution {record.id} already ended: {record.state.value}", EXIT_FAILED)
        state = api.kill_execution(record.id, store=store, wait_s=wait_s)
        waited = wait_s if wait_s is not None else api.default_kill_wait()
    finally:
        store.close()
    if state is ExecutionState.KILLED:
        click.echo(f"execution {record.id} KILLED")
        sys.exit(EXIT_OK)
    if state.is_final:
        _fail(f"execution {record.id} ended {state.value} before it could be killed", EXIT_FAILED)
    _fail(
        f"asked execution {record.id} to stop, but it is still {state.value} after"
        f" {waited:g} s; its runner stops it at its next heartbeat, or `runner kill` again",
        EXIT_FAILED,
    )


@cli.command()
@click.argument("execution", required=False)
@_db_option
def recover(execution: str | None, db_url: str | None) -> None:
    """End executions whose runner died, following their running tasks to the end.

    Every command does this when it opens the database, and hands an execution whose
    task still runs to `runner recover EXECUTION` in the background; this command does
    it in the foreground (it waits for those tasks to end).
    """
    from runner import api

    _configure_logs("console")
    store = api.open_store(db_url, recover=False)
    try:
        execution_id = api.get_execution(store, execution).id if execution else None
        recovered = api.recover(store, execution_id=execution_id)
    finally:
        store.close()
    for done in recovered:
        click.echo(f"recovered {done}")
    if not recovered:
        click.echo("nothing to recover")


@cli.command()
@_db_option
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(db_url: str | None, dry_run: bool) -> None:
    """Remove the containers and volumes of executions that have ended.

    Kept workspaces of failed executions go too (a restart then reruns every task).
    Those of running executions, and of executions this database does not know, stay.
    """
    from runner import api

    store = _open_store(db_url)
    try:
        garbage = api.collect_garbage(store, dry_run=dry_run)
    finally:
        store.close()
    verb = "would remove" if dry_run else "removed"
    for resource in garbage.removed:
        click.echo(
            f"{verb} {resource.kind} {resource.name[:64]} (execution {resource.execution_id})"
        )
    containers = sum(1 for r in garbage.removed if r.kind == "container")
    volumes = len(garbage.removed) - containers
    kept = []
    if garbage.kept_active:
        kept.append(f"{garbage.kept_active} of running executions")
    if garbage.kept_unknown:
        kept.append(f"{garbage.kept_unknown} of executions this database does not know")
    click.echo(
        f"{verb} {containers} container(s) and {volumes} volume(s)"
        + (f"; kept {', '.join(kept)}" if kept else "")
    )


@cli.command()
@click.argument("flows", nargs=-1, required=True, type=click.Path(path_type=str))
def validate(flows: Sequence[str]) -> None:
    """Check flow files; report every problem of each file at once.

    Warnings (a value given with -i reaching shell code unquoted, a script with Windows
    line endings) are printed too, but do not make the file invalid.
    """
    from runner import api

    bad = 0
    for path in flows:
        try:
            loaded = api.load_flow(path)
        except FlowError as exc:
            bad += 1
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            continue
        for warning in loaded.warnings:
            click.echo(f"warning: {warning}", err=True)
        said = f", {len(loaded.warnings)} warning(s)" if loaded.warnings else ""
        click.echo(f"{path}: ok ({len(loaded.flow.tasks)} tasks{said})")
        for line in api.describe_triggers(loaded):
            click.echo(f"  {line}")
    sys.exit(EXIT_USAGE if bad else EXIT_OK)


@cli.command()
@_db_option
@click.option("--flow", "flow_id", metavar="ID", help="Only executions of this flow.")
@click.option(
    "--state",
    type=click.Choice(EXECUTION_STATES, case_sensitive=False),
    help="Only executions in this state.",
)
@click.option("--limit", type=click.IntRange(min=1, max=MAX_LIMIT), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def executions(
    db_url: str | None, flow_id: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """List executions, newest first."""
    from rich.table import Table

    from runner import api

    store = _open_store(db_url)
    try:
        page = api.list_executions(
            store, flow_id=flow_id, states=[state] if state else [], limit=limit
        )
    finally:
        store.close()
    records = page.executions
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    table = Table(box=None, pad_edge=False)
    # The id is what people copy into `runner show`: never cut or wrap it.
    table.add_column("EXECUTION", no_wrap=True, min_width=32)
    for column in ("FLOW", "STATE", "STARTED", "DURATION", "TASKS"):
        table.add_column(column, no_wrap=True)
    for r in records:
        table.add_row(
            r.id,
            f"{r.namespace}.{r.flow_id}",
            _styled(r.state),
            _when(r.started_at or r.created_at),
            _duration(r.duration_s),
            str(len({t.task_id for t in r.task_runs})),
        )
    _stdout().print(table)


@cli.command()
@click.argument("execution")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show(execution: str, db_url: str | None, as_json: bool) -> None:
    """Show an execution and its task runs (EXECUTION may be a unique id prefix)."""
    from rich.table import Table

    from runner import api

    store = _open_store(db_url)
    try:
        record = api.get_execution(store, execution)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
        return
    console = _stdout()
    console.print(f"execution  {record.id}")
    console.print(f"flow       {record.namespace}.{record.flow_id} (revision {record.revision})")
    console.print(f"state      {_styled(record.state)}")
    console.print(
        f"started    {_when(record.started_at)}   ended {_when(record.ended_at)}   duration {_duration(record.duration_s)}"
    )
    if record.inputs:
        console.print(f"inputs     {json.dumps(record.inputs)}")
    if record.error:
        console.print(f"error      {record.error}")
    console.print()
    table = Table(box=None, pad_edge=False)
    # NODE only where a backend of several machines placed the task runs (Swarm)
    nodes = any(run.node for run in record.task_runs)
    columns = ("TASK", "ATTEMPT", "STATE", "EXIT", "DURATION", *(("NODE",) if nodes else ()))
    for column in (*columns, "IMAGE", "ERROR"):
        table.add_column(column)
    for run in record.task_runs:
        table.add_row(
            run.task_id,
            str(run.attempt),
            _styled(run.state),
            "" if run.exit_code is None else str(run.exit_code),
            _duration(run.duration_s),
            *((run.node or "",) if nodes else ()),
            run.image or "",
            run.error or "",
        )
    console.print(table)
    published = [(run.task_id, run.outputs) for run in record.task_runs if run.outputs]
    if published:
        console.print("\noutputs")
        for task_id, values in published:
            console.print(f"  {task_id}: {json.dumps(values, sort_keys=True)}", markup=False)


@cli.command(name="logs")
@click.argument("execution")
@_db_option
@click.option("--task", "task_id", metavar="ID", help="Only this task's lines.")
@click.option(
    "--tail", type=click.IntRange(min=1), metavar="N", help="Only the last N lines (of the task)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def logs_command(
    execution: str, db_url: str | None, task_id: str | None, tail: int | None, as_json: bool
) -> None:
    """Print the recorded output of an execution's tasks."""
    from runner import api

    store = _open_store(db_url)
    try:
        lines = api.get_logs(store, execution, task_id=task_id, tail=tail)
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "task_id": ln.task_id,
                        "time": ln.time.isoformat(),
                        "stream": ln.stream,
                        "line": ln.line,
                    }
                    for ln in lines
                ],
                indent=2,
            )
        )
        return
    width = max([12, *(len(ln.task_id) for ln in lines)])
    out = sys.stdout
    for ln in lines:
        bar = "!" if ln.stream == "stderr" else "│"
        out.write(f"{ln.task_id:<{width}} {bar} {ln.line}\n")


@cli.command()
@click.argument("execution")
@_db_option
@click.option("--task", "task_id", metavar="ID", help="Only this task run's artifacts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def artifacts(execution: str, db_url: str | None, task_id: str | None, as_json: bool) -> None:
    """List the artifacts copied out of an execution's tasks."""
    from rich.table import Table

    from runner import api

    store = _open_store(db_url)
    try:
        found = api.list_artifacts(store, execution, task_id=task_id)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in found], indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("TASK", "PATH", "SIZE", "SHA256", "COPIED TO"):
        table.add_column(column)
    for artifact in found:
        table.add_row(
            artifact.task_id,
            artifact.path,
            str(artifact.size),
            artifact.sha256[:16],
            str(artifact.local_path),
        )
    _stdout().print(table)


@cli.command()
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def info(db_url: str | None, as_json: bool) -> None:
    """Show which backend and engine runner uses, and which database at which revision."""
    from runner import api

    found = api.info(db_url)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        _print_info(found)
    sys.exit(EXIT_FAILED if found.engine_error or found.database_error else EXIT_OK)


def _print_info(found: Info) -> None:
    click.echo(f"backend    {found.backend}")
    if found.engine is not None:
        engine = found.engine
        click.echo(f"engine     {engine.name} {engine.version} at {engine.address}")
        if engine.chosen_by:
            click.echo(f"           chosen because {engine.chosen_by}")
        click.echo(f"engine os  {engine.os}")
        if engine.nodes:
            width = max(len(n.name) for n in engine.nodes)
            click.echo(f"nodes      {len(engine.nodes)}")
            for n in engine.nodes:
                runs = "1 task run" if n.task_runs == 1 else f"{n.task_runs} task runs"
                click.echo(
                    f"  {n.name:<{width}}  {n.role:<7}  {n.state:<12}  {n.availability:<6}  "
                    f"{runs}  {n.address}"
                )
    else:
        click.echo(f"engine     unreachable: {found.engine_error}")
    click.echo(f"database   {found.database}")
    if found.schema is not None:
        click.echo(f"schema     {_revision_text(found.schema)}")
    else:
        click.echo(f"schema     unknown: {found.database_error}")


# -- the server and what it serves ------------------------------------------------------------


@cli.command()
@click.option(
    "--host",
    envvar=SERVE_HOST_ENV,
    default=DEFAULT_SERVE_HOST,
    show_default=True,
    help=f"Address to listen on (0.0.0.0: every interface) [env {SERVE_HOST_ENV}].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    envvar=SERVE_PORT_ENV,
    default=DEFAULT_SERVE_PORT,
    show_default=True,
    help=f"TCP port; 0 picks a free one [env {SERVE_PORT_ENV}].",
)
@_flows_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=DEFAULT_SERVE_WORKERS,
    show_default=True,
    help="Executions running at once (on top of each flow's own limits).",
)
@click.option(
    "--grace",
    default=DEFAULT_SERVE_GRACE,
    show_default=True,
    metavar="DURATION",
    help="On SIGTERM or Ctrl-C, how long running executions may go on before they are killed.",
)
@_db_option
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    envvar=LOG_FORMAT_ENV,
    default="console",
    show_default=True,
    help="How the server's events are printed on stderr.",
)
def serve(
    host: str,
    port: int,
    flows_dir: str,
    workers: int,
    grace: str,
    db_url: str | None,
    log_format: str,
) -> None:
    """Serve the HTTP API, run the flows of the flows folder on their triggers.

    Loads every flow file under --flows (and picks up changes), fires schedules, webhooks
    and flow triggers, and runs executions in this process. The API is under /api/v1
    (OpenAPI at /openapi.json, docs at /docs); clients send a token of `runner token
    create`. SIGTERM or Ctrl-C stops it after --grace.
    """
    from runner import api
    from runner.server.serve import ServeOptions
    from runner.server.serve import serve as run_server

    grace_s = api.parse_seconds(grace, what="--grace")
    _configure_logs(log_format, task_output=False)
    options = ServeOptions(
        host=host,
        port=port,
        flows_dir=Path(flows_dir),
        workers=workers,
        grace_s=grace_s,
        db_url=db_url,
    )
    run_server(options, announce=lambda text: click.echo(text))


@cli.command()
@click.argument("flow", metavar="NAMESPACE.FLOW")
@click.option(
    "--trigger", "trigger_id", metavar="ID", help="The schedule (if the flow has several)."
)
@click.option("--start", required=True, metavar="TIME", help="First time, inclusive (2019-01-01).")
@click.option("--end", required=True, metavar="TIME", help="Last time, exclusive (2020-01-01).")
@click.option("--dry-run", is_flag=True, help="Only list the times, and those already run.")
@click.option("--wait", is_flag=True, help="Run them here and show their progress until all end.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Executions at once [default: the flow's concurrency limit, else 4].",
)
@_flows_option
@_db_option
def backfill(
    flow: str,
    trigger_id: str | None,
    start: str,
    end: str,
    dry_run: bool,
    wait: bool,
    workers: int | None,
    flows_dir: str,
    db_url: str | None,
) -> None:
    """Run a flow once per time of its schedule in [--start, --end), oldest first.

    Each execution sees its time as {{ trigger.date }}. A time already run (by the
    schedule or an earlier backfill) is not run again. FLOW is NAMESPACE.FLOW_ID of a
    flow in --flows, or a flow file. Times without a zone are in the trigger's. Without
    --wait, the executions run in a background process (its log is named).
    """
    from runner import api

    loaded = api.find_flow(flow, Path(flows_dir))
    begin, until = _parse_time(start, "--start"), _parse_time(end, "--end")
    store = _open_store(db_url)
    try:
        if dry_run or not wait:
            planned = api.backfill(
                store, loaded, start=begin, end=until, trigger=trigger_id, dry_run=True
            )
            if dry_run:
                _print_backfill(planned, dry_run=True)
                return
            todo = [t for t in planned.times if not t.already_run]
            if not todo:
                click.echo(f"{planned.flow_id}: all {len(planned.times)} time(s) already ran")
                return
            pid, log_path = api.run_in_background(
                ["backfill", flow, "--start", start, "--end", end, "--wait", "--flows", flows_dir]
                + (["--trigger", trigger_id] if trigger_id else [])
                + (["--workers", str(workers)] if workers else []),
                db_url=db_url,
                name=f"backfill-{loaded.flow.full_id}",
            )
            click.echo(
                f"{planned.flow_id}: backfilling {len(todo)} time(s) in the background"
                f" (pid {pid}, log {log_path}); {len(planned.times) - len(todo)} already ran"
            )
            return
        _backfill_and_wait(store, loaded, begin, until, trigger_id, workers)
    finally:
        store.close()


def _backfill_and_wait(
    store: Store,
    loaded: Any,
    begin: datetime,
    until: datetime,
    trigger_id: str | None,
    workers: int | None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runner import api

    _configure_logs("console", quiet=True)
    limit = loaded.flow.concurrency.limit
    worker = api.Worker(store, max_running=workers or limit or 4)
    ended: dict[str, int] = {}
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[states]}"),
            console=_stderr(),
            transient=False,
        ) as progress:
            bar = progress.add_task(f"backfill {loaded.flow.full_id}", total=None, states="")
            done = api.backfill(
                store, loaded, start=begin, end=until, trigger=trigger_id, worker=worker
            )
            started = done.started
            progress.update(bar, total=len(started))
            for execution_id in started:
                try:
                    state = worker.wait(execution_id).state.value
                except RunnerError as exc:
                    state = "FAILED"
                    _warn(f"execution {execution_id}: {exc}")
                ended[state] = ended.get(state, 0) + 1
                text = " ".join(f"{k}={v}" for k, v in sorted(ended.items()))
                progress.update(bar, advance=1, states=text)
    finally:
        worker.shutdown()
    already = len(done.times) - len(started)
    click.echo(
        f"{done.flow_id}: {len(started)} execution(s) ran"
        + (f", {already} time(s) had already run" if already else "")
        + (": " + ", ".join(f"{n} {k}" for k, n in sorted(ended.items())) if ended else "")
    )
    failed = sum(n for k, n in ended.items() if k not in ("SUCCESS", "WARNING"))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _print_backfill(planned: Any, *, dry_run: bool) -> None:
    for item in planned.times:
        when = item.scheduled_at.isoformat()
        if item.already_run:
            click.echo(f"{when}  already ran (execution {item.execution_id})")
        else:
            click.echo(f"{when}  would run" if dry_run else f"{when}  {item.execution_id}")
    todo = sum(1 for t in planned.times if not t.already_run)
    click.echo(
        f"{planned.flow_id} ({planned.trigger_id}): {len(planned.times)} time(s),"
        f" {todo} to run, {len(planned.times) - todo} already ran"
    )


def _parse_time(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        _fail(
            f"{option} {text!r} is not a date or time like 2019-01-01 or 2019-01-01T02:00",
            EXIT_USAGE,
        )


@cli.command()
@click.argument("flow", metavar="NAMESPACE.FLOW")
@_db_option
def pause(flow: str, db_url: str | None) -> None:
    """Stop a flow's triggers from firing (executions started by hand still run)."""
    from runner import api

    namespace, flow_id = _split_flow_id(flow)
    store = _open_store(db_url)
    try:
        api.pause_flow(store, namespace, flow_id)
    finally:
        store.close()
    click.echo(f"{namespace}.{flow_id} paused: its triggers do not fire until `runner unpause`")


@cli.command()
@click.argument("flow", metavar="NAMESPACE.FLOW")
@_flows_option
@_db_option
def unpause(flow: str, flows_dir: str, db_url: str | None) -> None:
    """Let a flow's triggers fire again; the times its schedules missed meanwhile follow
    each schedule's recover_missed (all, last or none), as the flow file says now."""
    from runner import api

    namespace, flow_id = _split_flow_id(flow)
    store = _open_store(db_url)
    try:
        api.unpause_flow(store, namespace, flow_id)
    finally:
        store.close()
    click.echo(f"{namespace}.{flow_id} unpaused")
    try:
        loaded = api.find_flow(f"{namespace}.{flow_id}", Path(flows_dir))
    except RunnerError:
        return
    store = _open_store(db_url)
    try:
        lines = api.describe_recovery(store, loaded)
    finally:
        store.close()
    for line in lines:
        click.echo(f"  {line}")


def _split_flow_id(text: str) -> tuple[str, str]:
    namespace, dot, flow_id = text.rpartition(".")
    if not dot or not namespace or not flow_id:
        _fail(f"{text!r} is not NAMESPACE.FLOW (like default.hello)", EXIT_USAGE)
    return namespace, flow_id


@cli.command()
@click.argument("execution")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A value for an input the paused task declares; repeat for several.",
)
@click.option("--task", "task_id", metavar="ID", help="Which paused task (if several are).")
@_db_option
@_execution_options
def resume(
    execution: str,
    inputs: Sequence[str],
    task_id: str | None,
    db_url: str | None,
    concurrency: int | None,
    log_format: str,
    keep_workspace: bool,
    allow_env: Sequence[str],
    artifacts_dir: str | None,
) -> None:
    """Resume a PAUSED execution and run it on to its end, here.

    The values given with -i become the outputs of the paused task (the inputs it
    declares); the tasks waiting for it run. EXECUTION may be a unique id prefix.
    """
    from runner import api

    values = api.parse_input_args(inputs)
    _configure_logs(log_format)
    store = _open_store(db_url)
    try:

        def announce(execution_id: str, task: str) -> None:
            click.echo(f"execution {execution_id}: resumed at task {task}")

        result = api.resume_execution(
            execution,
            values,
            task=task_id,
            store=store,
            handle_signals=True,
            on_resumed=announce,
        )
        record = api.get_execution(store, result.execution_id)
    finally:
        store.close()
    _print_summary(record)
    if result.state is ExecutionState.PAUSED:
        click.echo(f"execution {record.id} is PAUSED again: resume it with `runner resume`")
        sys.exit(EXIT_OK)
    _exit_for(result.state)


@cli.group()
def token() -> None:
    """Create, list and revoke the tokens clients of `runner serve` send.

    A token is shown once, when it is created; the database keeps only its SHA-256
    digest. Clients send it as `Authorization: Bearer TOKEN` (the CLI reads RUNNER_API_TOKEN).
    """


@token.command(name="create")
@click.argument("name")
@_db_option
def token_create(name: str, db_url: str | None) -> None:
    """Make a token named NAME and print it (this once)."""
    from runner import api

    store = _open_store(db_url)
    try:
        secret, _ = api.create_token(store, name)
    finally:
        store.close()
    click.echo(secret)
    _warn(f"token {name!r} created: it is shown only now; keep it as a secret")


@token.command(name="list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def token_list(db_url: str | None, as_json: bool) -> None:
    """List the tokens: name, its first characters, when it was made."""
    from runner import api

    store = _open_store(db_url)
    try:
        found = api.list_tokens(store)
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"name": t.name, "shown": t.shown, "created_at": t.created_at.isoformat()}
                    for t in found
                ],
                indent=2,
            )
        )
        return
    for item in found:
        click.echo(f"{item.name:<24} {item.shown:<12} {_when(item.created_at)}")
    if not found:
        click.echo("no tokens: make one with `runner token create NAME`")


@token.command(name="revoke")
@click.argument("name")
@_db_option
def token_revoke(name: str, db_url: str | None) -> None:
    """Delete the token NAME: requests carrying it are refused from now on."""
    from runner import api

    store = _open_store(db_url)
    try:
        api.revoke_token(store, name)
    finally:
        store.close()
    click.echo(f"token {name!r} revoked")


@cli.group()
def db() -> None:
    """Show or upgrade the database schema (runner's Alembic migrations).

    Every other command upgrades the schema when it opens the database; these do it
    on their own, e.g. in a deployment step before any runner uses a new version.
    """


@db.command(name="current")
@_db_option
@click.option("--check", is_flag=True, help="Exit 1 unless the schema is at the head.")
def db_current(db_url: str | None, check: bool) -> None:
    """Show the database's schema revision and whether it is the newest (head)."""
    from runner import api

    description, revision = api.schema_revision(db_url)
    click.echo(f"{description}: {_revision_text(revision)}")
    sys.exit(EXIT_FAILED if check and not revision.is_head else EXIT_OK)


@db.command(name="upgrade")
@_db_option
def db_upgrade(db_url: str | None) -> None:
    """Run the migrations up to the newest revision (head)."""
    from runner import api

    description, before, after = api.upgrade_schema(db_url)
    if before.current == after.current:
        click.echo(f"{description}: already at {_revision_text(after)}")
    elif before.current is None:
        click.echo(f"{description}: created the tables, {_revision_text(after)}")
    else:
        click.echo(
            f"{description}: upgraded from revision {before.current} to {_revision_text(after)}"
        )


def _revision_text(revision: SchemaRevision) -> str:
    if revision.current is None:
        return f"no tables yet (head is {revision.head}: run `runner db upgrade`)"
    if revision.is_head:
        return f"revision {revision.current} (head)"
    if not revision.known:
        return (
            f"revision {revision.current}, unknown to this runner (it ships up to"
            f" {revision.head}): a newer runner upgraded it"
        )
    return f"revision {revision.current} (head is {revision.head}: run `runner db upgrade`)"


def _print_summary(record: ExecutionRecord) -> None:
    from rich.table import Table

    attempts: dict[str, int] = {}
    last: dict[str, Any] = {}
    for run in record.task_runs:
        attempts[run.task_id] = attempts.get(run.task_id, 0) + 1
        last[run.task_id] = run
    table = Table(box=None, pad_edge=False, title=None)
    for column in ("TASK", "STATE", "ATTEMPTS", "DURATION", "EXIT"):
        table.add_column(column)
    for task_id, run in last.items():
        table.add_row(
            task_id,
            _styled(run.state),
            str(attempts[task_id]),
            _duration(run.duration_s),
            "" if run.exit_code is None else str(run.exit_code),
        )
    console = _stdout()
    console.print()
    console.print(table)
    console.print(
        f"\nexecution {record.id} {_styled(record.state)} in {_duration(record.duration_s)}"
    )
    if record.error:
        console.print(f"error: {record.error}")


def _styled(state: str) -> str:
    style = _STATE_STYLE.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the console script and `python -m runner`."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="runner", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        # A second Ctrl-C during a run: leave at once, without waiting for the worker
        # threads (what was recorded stays; the next command recovers the execution).
        click.echo("interrupted", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if isinstance(exc, FlowError):
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            sys.exit(exc.exit_code)
        if isinstance(exc, RunnerError):
            _fail(str(exc), exc.exit_code)
        if debug():
            import traceback

            traceback.print_exc()
        _fail(
            f"internal error: {exc!r} (set {DEBUG_ENV}=1 for the traceback, and please report it)",
            EXIT_FAILED,
        )
    sys.exit(EXIT_OK)
