"""The ``tfos`` command line. Only the CLI configures logging handlers.

``tfos submit ...`` builds a spark-submit command (:mod:`tfos.submit`) and runs it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tfos.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfos",
        description="Run a TensorFlow cluster (tf.distribute) inside a Spark application.",
        epilog="Library use: cluster = tfos.run(sc, main_fun, args, num_executors=N); cluster.shutdown()",
    )
    parser.add_argument("--version", action="version", version=f"tfos {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # `submit` parses its own arguments (spark-submit's grammar); registered for --help
    commands.add_parser("submit", add_help=False,
                        help="run a script with spark-submit, set up for a tfos cluster "
                             "(tfos submit --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "submit":
        return submit(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
    return 0


def submit(argv: list[str]) -> int:
    """``tfos submit``: 2 for a usage error (nothing run), else spark-submit's exit code."""
    from tfos.submit import (
        USAGE,
        SubmitError,
        build_command,
        find_spark_submit,
        hdfs_environment,
        parse_submit_args,
        wants_help,
    )

    if wants_help(argv):
        print(USAGE, end="")
        return 0
    try:
        config = parse_submit_args(argv)
        hdfs_env = hdfs_environment(os.environ, _stdout_of) if config.hdfs else None
        command = build_command(config, spark_submit=find_spark_submit(os.environ), python=sys.executable,
                                environ=os.environ, hdfs_env=hdfs_env)
    except SubmitError as exc:
        print(f"tfos submit: error: {exc}", file=sys.stderr)
        return 2
    if config.dry_run:
        print(command.shell())
        return 0
    if command.pack:
        print(f"tfos submit: packing: {' '.join(command.pack)}", file=sys.stderr, flush=True)
        code = _run(list(command.pack), dict(os.environ))
        if code:
            print(f"tfos submit: error: packing the environment failed (exit code {code}); "
                  "nothing was submitted", file=sys.stderr)
            return code
    print(f"tfos submit: {command.shell()}", file=sys.stderr, flush=True)
    return _run(list(command.argv), {**os.environ, **command.env})


def _run(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` in the foreground; Ctrl-C reaches it too (same process group), so wait for it."""
    proc = subprocess.Popen(argv, env=env)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue
    return code if code >= 0 else 128 - code


def _stdout_of(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout


if __name__ == "__main__":
    sys.exit(main())
