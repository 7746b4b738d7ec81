"""The command line: ``shmray COMMAND`` (or ``python -m shmray COMMAND``).

A command is a subparser plus a handler(args) -> exit status; add one in
``build_parser`` next to ``demo``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from . import _cli_text, _microbenchmark, _shm, _snapshot, _status_area  # never the runtime
from .util.state import _filters, _records
from .util.state.exception import RayStateApiException


def run_demo(args) -> int:
    # Imported here, not at the top: the demo brings numpy and a session's worth of task
    # definitions, which parsing arguments, printing help and other commands need not load.
    from . import _demo
    _demo.run(num_cpus=args.num_cpus, quick=args.quick)
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 < value < math.inf):  # (nan too)
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """A usage error is one line (what is wrong, where to look), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="shmray",
        description="shmray: Ray's Tasks and Actors API on one machine, over shared memory.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the seed's task patterns and benchmark against multiprocessing",
        description="Start a session, run the task patterns of the seed (parallel map, "
                    "dependencies, map-reduce, fork-join, pipeline, multiple returns, a large "
                    "shared array), and measure small-task throughput and round-trip latency "
                    "against multiprocessing.Pool with as many processes as workers.")
    demo.add_argument("--num-cpus", type=positive_int, default=None, metavar="N",
                      help="workers, and Pool processes (default: the CPUs this process may "
                           "run on)")
    demo.add_argument("--quick", action="store_true",
                      help="time 2,000 small tasks instead of 20,000")
    demo.set_defaults(handler=run_demo)

    run = commands.add_parser(
        "run", help="run a Ray program on shmray: its `import ray` is shmray",
        description="Run PROGRAM (a path, or -m MODULE) with `import ray`, `ray.exceptions`, "
                    "`ray.util` and the other modules shmray has resolving to shmray's, in "
                    "the program and in every worker; a Ray module shmray lacks fails to "
                    "import with an error naming it (never the real ray).")
    run.add_argument("-m", dest="module", action="store_true",
                     help="PROGRAM is a module name, run as `python -m` runs it")
    run.add_argument("program", metavar="PROGRAM")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    run.set_defaults(handler=run_program)

    bench = commands.add_parser(
        "bench", help="short throughput summary against multiprocessing.Pool (full suite: "
                      "pytest bench/ --benchmark-only)")
    bench.add_argument("--quick", action="store_true", help="fewer tasks, one round")
    bench.set_defaults(handler=run_bench)

    _microbenchmark.add_parser(commands, positive_seconds).set_defaults(
        handler=lambda args: _microbenchmark.main(args))

    cleanup = commands.add_parser(
        "cleanup", help="remove what sessions whose driver is gone left behind",
        description="Kill worker processes (named shmray:<driver pid>) whose driver no "
                    "longer exists, unlink its /dev/shm/shmray_<pid>_* segments and remove "
                    "its <tmp>/shmray-sessions/session_<pid>_* directory (status files, spilled or "
                    "file-backed objects). A driver killed with SIGKILL leaves them; live "
                    "sessions are never touched. The next init() does the same.")
    cleanup.set_defaults(handler=run_cleanup)

    def session_command(name, help, description, handler):
        cmd = commands.add_parser(name, help=help, description=description)
        cmd.add_argument("--session", metavar="PID|TAG",
                         help="which live session (default: the newest; see `shmray list "
                              "sessions`)")
        cmd.add_argument("--json", action="store_true", help="print JSON, for scripts")
        cmd.set_defaults(handler=handler)
        return cmd

    status = session_command(
        "status", "the live session: resources, tasks, workers, actors, object store",
        "Read a live session's status area (shared memory; the session is not joined "
        "and keeps running undisturbed): the driver, resources in use, task counts, one row "
        "per worker (pid, core, state, current task and for how long, tasks done, resident "
        "memory), actor counts and one row per actor's worker, and the object store.",
        run_status)
    status.add_argument("--watch", nargs="?", type=positive_seconds, const=1.0,
                        metavar="SECONDS",
                        help="refresh in place every SECONDS (default 1) until Ctrl-C")
    session_command(
        "memory", "one row per object: size, where, references, creator (like `ray memory`)",
        "List the objects of a live session, largest first: id, size, where it is (inline, "
        "shared memory, spilled), how many references hold it, and the task or put that "
        "created it; then the totals.", run_memory)
    listing = session_command(
        "list", "list tasks, actors, objects, workers (Ray's records), or live sessions",
        "`list tasks`: the unfinished task attempts and the latest finished ones (up to "
        "10,000 remembered) with state, attempt, worker, run time and a failed one's error. "
        "`list actors`: the live actors and the latest dead ones, with class, name, state, "
        "process, restarts, calls done and the method running now. `list objects`: the "
        "objects in the store, largest first. `list workers`: the driver and the workers. "
        "--json prints Ray's records (ray.util.state's TaskState, ActorState, ObjectState, "
        "WorkerState), as shmray.util.state returns them. "
        "`list sessions`: every live session on this machine.", run_list)
    listing.add_argument("what", choices=("tasks", "actors", "objects", "workers", "sessions"))
    listing.add_argument("--limit", type=positive_int, default=100, metavar="N",
                         help="at most N rows (default 100)")
    listing.add_argument("--filter", action="append", default=[], dest="filters",
                         metavar="KEY=VALUE",
                         help="only the rows whose column KEY is VALUE (KEY!=VALUE: is not); "
                              "Ray's columns and values, e.g. state=FAILED, type=ACTOR_TASK, "
                              "worker_pid=1234 (strings compare case-insensitively); "
                              "repeat it: every filter must hold")
    listing.add_argument("--detail", action="store_true",
                         help="every column of each row (Ray's detail columns too: times, "
                              "a failed task's error message, required resources, ...)")
    summary = session_command(
        "summary", "tasks grouped by function name",
        "Per function name: tasks in each state and their mean run time.", run_summary)
    summary.add_argument("what", choices=("tasks",))
    timeline = session_command(
        "timeline", "write a Chrome-trace JSON of task execution per worker",
        "Write the tasks that ran (the latest 10,000) and those running now (until now) as "
        "Chrome-trace JSON: one event per task on a track per worker. Open it in "
        "chrome://tracing or https://ui.perfetto.dev.",
        run_timeline)
    timeline.add_argument("file", nargs="?", metavar="FILE",
                          help="where to write (default: shmray-timeline-<pid>-<time>.json "
                               "in the current directory)")
    return parser


# ----------------------------------------------------------- session commands
def _open(args):
    """(session info, all live sessions), or print why not and return None."""
    try:
        return _status_area.find_session(args.session)
    except _status_area.NoSession as e:
        print(e, file=sys.stderr)
        return None


def _open_snapshot(args):
    """(session info, its snapshot) for the commands that print a snapshot, or print
    why not and return None."""
    found = _open(args)
    if found is None:
        return None
    snapshot, _ = _status_area.fetch_snapshot(found[0])
    if snapshot is None:
        print(f"The session of driver pid {found[0]['driver_pid']} did not answer within 2 s "
              f"(busy outside shmray?); try again.", file=sys.stderr)
        return None
    return found[0], snapshot


def _print_json(data):
    json.dump(data, sys.stdout, indent=1)
    sys.stdout.write("\n")


def run_status(args) -> int:
    found = _open(args)
    if found is None:
        return 1
    try:
        return _status_loop(args, *found)
    except KeyboardInterrupt:  # Ctrl-C ends --watch wherever it lands
        if not args.watch:
            raise
        return 0


def _status_loop(args, info, sessions) -> int:
    while True:
        try:
            live = _status_area.read_live(info)
        except (OSError, ValueError):
            print(f"The session of driver pid {info['driver_pid']} has ended.", file=sys.stderr)
            return 1
        snapshot, fresh = _status_area.fetch_snapshot(info)
        _snapshot.join_workers(live["workers"], snapshot)
        if args.json:
            _print_json({"session": info, "driver": live["driver"], "workers": live["workers"],
                         "snapshot_fresh": fresh,
                         "actors": snapshot["actors"] if snapshot else None,
                         "generators": snapshot.get("generators") if snapshot else None,
                         "resources": snapshot["resources"] if snapshot else None,
                         "functions": snapshot["functions"] if snapshot else None,
                         "store": snapshot["store"] if snapshot else None})
        else:
            text = _cli_text.status(info, live, snapshot, fresh, sessions)
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")  # clear, top left: refresh in place
            print(text)
        if not args.watch:
            return 0
        sys.stdout.flush()
        time.sleep(args.watch)


def run_memory(args) -> int:
    opened = _open_snapshot(args)
    if opened is None:
        return 1
    _, snapshot = opened
    if args.json:
        _print_json({"objects": snapshot["objects"], "store": snapshot["store"]})
    else:
        print(_cli_text.memory(snapshot))
    return 0


def run_list(args) -> int:
    if args.what == "sessions":
        if args.filters or args.detail:
            return _usage_error("--filter and --detail apply to tasks, actors, objects and "
                                "workers")
        sessions = _status_area.list_sessions()
        if args.json:
            _print_json(sessions)
        elif not sessions:
            print("No shmray session is running on this machine.", file=sys.stderr)
            return 1
        else:
            print(_cli_text.sessions(sessions))
        return 0
    kind = _records.KINDS[args.what]
    try:  # (checked before anything is read: a typo says so at once)
        filters = _filters.check([_filters.parse(f) for f in args.filters], kind.schema,
                                 args.what)
    except (ValueError, TypeError, RayStateApiException) as e:
        return _usage_error(str(e))
    opened = _open_snapshot(args)
    if opened is None:
        return 1
    info, snapshot = opened
    if args.what == "actors" and snapshot.get("actors") is None:  # an older shmray's
        print(f"The session of driver pid {info['driver_pid']} does not list actors.",
              file=sys.stderr)
        return 1
    found = [r for r in kind.build(snapshot) if _filters.matches(r, filters)]
    shown = found[:args.limit]
    columns = kind.schema.list_columns(detail=args.detail)
    if args.json:
        _print_json([{c: r.get(c) for c in columns} for r in shown])
    elif args.detail:
        print(_cli_text.detail([{c: r.get(c) for c in columns} for r in shown]))
    else:
        print(_list_table(args.what, shown, snapshot))
    if len(found) > len(shown):
        print(f"({len(found) - len(shown):,} more not shown: raise --limit, or narrow with "
              f"--filter)", file=sys.stderr)
    return 0


def _usage_error(message: str) -> int:
    """A usage error of `shmray list` found past parsing: one line, as argparse's."""
    print(f"shmray list: error: {message} (see shmray list --help)", file=sys.stderr)
    return 2


def _list_table(what: str, records: list, snapshot: dict) -> str:
    if what == "tasks":
        return _cli_text.tasks(records, snapshot)
    if what == "actors":  # (shmray's own columns too: calls done, the method running)
        rows = {row["actor_id"]: row for row in snapshot["actors"]}
        return _cli_text.actors([rows[r["actor_id"]] for r in records])
    if what == "objects":
        return _cli_text.objects(records)
    return _cli_text.workers(records)


def run_summary(args) -> int:
    opened = _open_snapshot(args)
    if opened is None:
        return 1
    groups = _snapshot.summarize(opened[1]["tasks"])
    if args.json:
        _print_json(groups)
    else:
        print(_cli_text.summary(groups))
    return 0


def run_timeline(args) -> int:
    opened = _open_snapshot(args)
    if opened is None:
        return 1
    info, snapshot = opened
    events = _snapshot.chrome_trace(snapshot)
    path = args.file or time.strftime(
        f"shmray-timeline-{info['driver_pid']}-%Y%m%d-%H%M%S.json")
    try:
        with open(path, "w") as f:
            json.dump(events, f)
    except OSError as e:  # a missing directory, no permission, a full disk
        print(f"Cannot write the timeline to {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    tasks = sum(1 for e in events if e["ph"] == "X")
    running = sum(1 for e in events if e["ph"] == "X" and e["args"]["state"] == _snapshot.RUNNING)
    if args.json:
        _print_json({"file": os.path.abspath(path), "events": len(events), "tasks": tasks,
                     "running": running})
    else:
        print(f"{tasks} task(s) written to {path} ({running} running, until now)\n"
              f"open it in chrome://tracing or https://ui.perfetto.dev")
    return 0


def run_cleanup(args) -> int:
    removed = _shm.reclaim_dead_sessions()
    for name in removed:
        if name.startswith("pid "):
            print(f"killed worker process {name[4:]} (its driver is gone)")
        else:
            print(f"removed {name if name.startswith('/') else '/dev/shm/' + name}")
    print(f"{len(removed)} leftover(s) of dead sessions removed (live sessions untouched)")
    return 0


def run_program(args) -> int:
    """`shmray run`: the program as __main__, with `import ray` answered by shmray."""
    import runpy

    from . import _ray_alias

    _ray_alias.install()
    sys.argv = [args.program, *args.args]
    try:
        if args.module:
            runpy.run_module(args.program, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(args.program)))
            runpy.run_path(args.program, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def run_bench(args) -> int:
    from . import _bench  # imported only when asked: it starts a session and a Pool

    return _bench.main(["--quick"] if args.quick else [])


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except BrokenPipeError:  # `shmray list tasks | head`: the reader has seen enough
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C while a command waits (a snapshot, the demo)
        return 130
    except OSError as e:  # e.g. a sessions directory this user may not read
        print(f"shmray {args.command}: {e}", file=sys.stderr)
        return 1
