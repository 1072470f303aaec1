"""The ``tfos`` command line. Only the CLI configures logging handlers.

Subcommands are added here as they land (``submit`` builds a spark-submit line).
"""

from __future__ import annotations

import argparse
import sys

from tfos.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfos",
        description="Run a TensorFlow cluster (tf.distribute) inside a Spark application.",
        epilog="Library use: cluster = tfos.run(sc, main_fun, args, num_executors=N); cluster.shutdown()",
    )
    parser.add_argument("--version", action="version", version=f"tfos {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0  # pragma: no cover - no subcommand is registered yet


if __name__ == "__main__":
    sys.exit(main())
