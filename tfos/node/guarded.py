"""Run a Python module as a child that dies with its parent.

``python -m tfos.node.guarded <parent_pid> <module> [args...]`` sets the kernel's
parent-death signal, checks the parent is still the expected one, then runs
``<module>`` as ``__main__``. Used for TensorBoard, which has no such guard itself.
"""

from __future__ import annotations

import runpy
import sys

from tfos.node.process import die_with_parent


def main() -> None:
    parent_pid, module, *args = sys.argv[1:]
    if not die_with_parent(int(parent_pid)):
        sys.exit(70)  # the parent is already gone
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
