"""docs/troubleshooting.md quotes every message a user can get from a tfos error.

The test reads tfos's source: every ``raise SomeTfosError("...")`` (or an f-string) whose
message has a literal part of a dozen characters or more must have that part, the longest
one, in troubleshooting.md. A new error without its row fails here, so the table cannot
drift from the code again.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import re

import tfos.errors

ROOT = pathlib.Path(tfos.errors.__file__).parent
DOC = ROOT.parent / "docs" / "troubleshooting.md"
#: literal parts shorter than this say too little to look for ("; received: ")
MIN_KEY_CHARS = 12


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\\|", "|")).strip()


def _tfos_error_names(trees: dict) -> set[str]:
    """tfos.errors' exception classes, and their subclasses defined anywhere in tfos."""
    names = {n for n, o in vars(tfos.errors).items() if inspect.isclass(o) and issubclass(o, BaseException)}
    while True:
        more = {node.name for tree in trees.values() for node in ast.walk(tree)
                if isinstance(node, ast.ClassDef) and node.name not in names
                and any((getattr(b, "id", None) or getattr(b, "attr", None)) in names for b in node.bases)}
        if not more:
            return names
        names |= more


def _literal_parts(node) -> list[str] | None:
    """The literal text of a message expression, split where values go in; None if it has none."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts, current = [], ""
        for value in node.values:
            if isinstance(value, ast.Constant):
                current += str(value.value)
            else:
                parts.append(current)
                current = ""
        return [*parts, current]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_parts(node.left), _literal_parts(node.right)
        return None if left is None and right is None else (left or []) + (right or [])
    return None


def raised_messages() -> list[tuple[str, int, str, str]]:
    """(file, line, exception, the message's longest literal part) of every tfos raise."""
    trees = {path: ast.parse(path.read_text()) for path in sorted(ROOT.rglob("*.py"))}
    errors = _tfos_error_names(trees)
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name not in errors:
                continue
            for arg in node.exc.args:  # ProtocolError(code, message): the first string-like argument
                parts = _literal_parts(arg)
                if parts is None:
                    continue
                key = max((_normalized(p) for p in parts), key=len)
                if len(key) >= MIN_KEY_CHARS and not key.isupper():  # not a status code
                    found.append((str(path.relative_to(ROOT.parent)), node.lineno, name, key))
                    break
    return found


def test_the_scan_finds_the_raises_it_must():
    found = raised_messages()
    assert len(found) > 250  # about 280 when this test was written
    assert any(f == "tfos/spark/app.py" and e == "ConfigError" for f, _, e, _ in found)


def test_troubleshooting_quotes_every_tfos_error_message():
    doc = _normalized(DOC.read_text())
    missing = [f"{file}:{line} {error}: {key!r}" for file, line, error, key in raised_messages() if key not in doc]
    assert missing == [], ("docs/troubleshooting.md lacks these messages (quote each, with its cause and "
                           "fix, under the heading where a user meets it):\n" + "\n".join(missing))
