"""The command line: ``shmray COMMAND`` (or ``python -m shmray COMMAND``).

A command is a subparser plus a handler(args) -> exit status; add one in
``build_parser`` next to ``demo``.
"""
from __future__ import annotations

import argparse
import sys


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmray", description="shmray: Ray's Tasks API on one machine, over shared memory.")
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

    bench = commands.add_parser(
        "bench", help="short throughput summary against multiprocessing.Pool (full suite: "
                      "pytest bench/ --benchmark-only)")
    bench.add_argument("--quick", action="store_true", help="fewer tasks, one round")
    bench.set_defaults(handler=run_bench)

    cleanup = commands.add_parser(
        "cleanup", help="remove the shared memory of sessions whose driver is gone",
        description="Unlink every /dev/shm/shmray_<pid>_* segment and remove every "
                    "<tmp>/shmray_<pid>_* directory (spilled or file-backed objects) whose "
                    "driver process no longer exists (a driver killed with SIGKILL leaves "
                    "them; live sessions are never touched). The next init() does the same.")
    cleanup.set_defaults(handler=run_cleanup)
    return parser


def run_cleanup(args) -> int:
    from . import _shm  # not the runtime: cleaning up must not start anything

    removed = _shm.reclaim_dead_sessions()
    for name in removed:
        print(f"removed {name if name.startswith('/') else '/dev/shm/' + name}")
    print(f"{len(removed)} segment(s) and directories of dead sessions removed")
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
    return args.handler(args)
