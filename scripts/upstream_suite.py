"""Run TensorFlowOnSpark's own unittest suite against tfos.compat and print the counts.

    python scripts/upstream_suite.py PATH_TO_TENSORFLOWONSPARK [--executors 2] [-k PATTERN]

PATH is a TensorFlowOnSpark checkout (a work tree, or a bare git directory: its HEAD is
read). The test modules are copied to a temporary directory with one change:
``tensorflowonspark`` becomes ``tfos.compat`` (imports and ``mock.patch`` targets). Their
standalone-cluster harness (``tests/test.py`` reads ``MASTER``, ``SPARK_WORKER_INSTANCES``
and ``SPARK_CLASSPATH``) gets ``local-cluster[N,1,1024]`` on loopback instead. Not part of
CI (about 10 minutes); docs/porting.md has the result per test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

_IMPORT = re.compile(r"\btensorflowonspark\b")


def read_tree(source: str, folder: str) -> list[tuple[str, str]]:
    """``(name, text)`` of the files directly in ``folder`` of a checkout or bare git dir."""
    files = []
    if os.path.isdir(os.path.join(source, folder)):
        for name in sorted(os.listdir(os.path.join(source, folder))):
            path = os.path.join(source, folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    files.append((name, f.read()))
        return files
    listing = subprocess.run(["git", "--git-dir", source, "ls-tree", "--name-only", "HEAD", folder],
                             check=True, capture_output=True, text=True).stdout.split()
    for path in listing:
        shown = subprocess.run(["git", "--git-dir", source, "show", f"HEAD:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:  # a sub-directory is not a file
            files.append((os.path.basename(path), shown.stdout))
    return files


def copy_tests(source: str, target: str) -> list[str]:
    """The upstream tests/*.py written to ``target`` with ``tensorflowonspark`` -> ``tfos.compat``."""
    names = [(name, text) for name, text in read_tree(source, "tests/") if name.endswith(".py")]
    for name, text in names:
        with open(os.path.join(target, name), "w", encoding="utf-8") as f:
            f.write(_IMPORT.sub("tfos.compat", text))
    return [name for name, _ in names]


def summarize(output: str, work: str) -> list[str]:
    """Counts from unittest's verbose output; a module that did not import counts its tests."""
    ran = int((re.findall(r"^Ran (\d+) tests?", output, re.M) or ["0"])[-1])
    failed = re.findall(r"^(FAIL|ERROR): (\w+) \(([\w.]+)\)", output, re.M)
    lines, not_imported, unrun = [], [], 0
    for verdict, name, where in failed:
        if where.startswith("unittest.loader._FailedTest"):
            with open(os.path.join(work, f"{name}.py"), encoding="utf-8") as f:
                count = len(re.findall(r"^\s+def test\w*\(", f.read(), re.M))
            not_imported.append(f"{name} ({count} tests)")
            unrun += count
        else:
            lines.append(f"{verdict:5} {where}")
    passed = ran - len(failed)
    total = passed + len(lines) + unrun
    return [f"{passed} of {total} passed", *lines,
            *(f"not imported: {m}" for m in not_imported)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="TensorFlowOnSpark checkout (work tree or bare git dir)")
    parser.add_argument("--executors", type=int, default=2)
    parser.add_argument("-k", default="", help="only test ids matching this (unittest -k)")
    opts = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tfos-upstream-")
    try:
        copy_tests(opts.source, work)
        jar = os.path.join(work, "no-tensorflow-hadoop.jar")  # test.py insists on SPARK_CLASSPATH
        env = dict(os.environ, MASTER=f"local-cluster[{opts.executors},1,1024]",
                   SPARK_WORKER_INSTANCES=str(opts.executors), SPARK_CLASSPATH=jar,
                   SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
                   PYSPARK_DRIVER_PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, "-m", "unittest", "discover", "-s", work, "-v"]
        if opts.k:
            command += ["-k", opts.k]
        result = subprocess.run(command, cwd=work, env=env, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(result.stderr)
        print(f"\nupstream suite through tfos.compat ({opts.executors} executors):")
        for line in summarize(result.stderr, work):
            print(f"  {line}")
        return result.returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
