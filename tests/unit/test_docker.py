"""docker/Dockerfile and docker/compose.yaml, checked without a Docker engine.

The Dockerfile gets hadolint-style rules (the rule ids are hadolint's); compose.yaml is
parsed (PyYAML when installed, else a structural text check) and its services must agree
with each other and with what tfos needs: one-core workers, one master address, and a
submit command that `tfos submit` accepts.
"""

from __future__ import annotations

import os
import re
import shlex

import pytest

from tfos.submit import build_command, parse_submit_args

pytestmark = pytest.mark.timeout(30)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
COMPOSE = os.path.join(ROOT, "docker", "compose.yaml")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    joined, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            joined.append(current)
            current = ""
    assert not current, f"the Dockerfile ends inside a continued line: {current!r}"
    result = []
    for line in joined:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def lint(text: str) -> list[str]:
    """Hadolint-style findings for a Dockerfile's text; empty when clean."""
    found = []
    steps = instructions(text)
    froms = [args for name, args in steps if name == "FROM"]
    if not froms or steps[0][0] not in ("FROM", "ARG"):
        found.append("DL3061: the Dockerfile must begin with FROM (or ARG)")
    for image in froms:
        ref = image.split()[0]
        if "@sha256:" in ref:
            continue
        name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "")
        if not tag:
            found.append(f"DL3006: FROM {ref} has no tag; pin a version")
        elif tag == "latest":
            found.append(f"DL3007: FROM {ref} uses latest; pin a version")
        elif not re.search(r"\d", tag):
            found.append(f"DL3006: FROM {ref} has no version in its tag")
    for name, args in steps:
        if name == "ADD" and not re.search(r"https?://|\.tar", args):
            found.append(f"DL3020: use COPY, not ADD, for files: ADD {args}")
        if name in ("CMD", "ENTRYPOINT") and not args.startswith("["):
            found.append(f"DL3025: {name} should use the JSON form: {name} {args}")
        if name != "RUN":
            continue
        commands = [c.strip() for c in re.split(r"&&|;", args)]
        if re.search(r"(^|\s)apt\s", args):
            found.append(f"DL3027: use apt-get, not apt: RUN {args}")
        if re.search(r"(^|\s)sudo\s", args):
            found.append(f"DL3004: no sudo in RUN: RUN {args}")
        if any(c.startswith("cd ") for c in commands):
            found.append(f"DL3003: use WORKDIR instead of cd: RUN {args}")
        if "|" in args.replace("||", "") and "pipefail" not in args:
            found.append(f"DL4006: set -o pipefail before a pipe: RUN {args}")
        installs = [c for c in commands if re.match(r"apt-get\s+(\S+\s+)*install\b", c)]
        for install in installs:
            if not re.search(r"\s(-y|--yes|-qq|--assume-yes)\b", install):
                found.append(f"DL3014: apt-get install needs -y: {install}")
            if "--no-install-recommends" not in install:
                found.append(f"DL3015: apt-get install needs --no-install-recommends: {install}")
        if installs and "apt-get update" not in args:
            found.append(f"DL3009/DL3005: apt-get install without apt-get update in the same RUN: RUN {args}")
        if installs and "rm -rf /var/lib/apt/lists" not in args:
            found.append(f"DL3009: delete the apt lists in the same RUN: RUN {args}")
        if "apt-get update" in args and not installs:
            found.append(f"DL3009: apt-get update alone leaves a stale cache layer: RUN {args}")
        pip_installs = [c for c in commands if re.search(r"\bpip3?\s+install\b", c)]
        env_no_cache = any(n == "ENV" and "PIP_NO_CACHE_DIR" in a for n, a in steps)
        for pip in pip_installs:
            if "--no-cache-dir" not in pip and not env_no_cache:
                found.append(f"DL3042: pip install without --no-cache-dir (or ENV PIP_NO_CACHE_DIR): {pip}")
    users = [args for name, args in steps if name == "USER"]
    if not users or users[-1] in ("root", "0"):
        found.append("DL3002: the last USER should not be root")
    return found


def test_dockerfile_passes_the_lint_rules():
    with open(DOCKERFILE) as f:
        assert lint(f.read()) == []


@pytest.mark.parametrize("dockerfile,finding", [
    ("FROM python\nUSER app\n", "DL3006: FROM python has no tag; pin a version"),
    ("FROM python:latest\nUSER app\n", "DL3007: FROM python:latest uses latest; pin a version"),
    ("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y --no-install-recommends jq\nUSER app\n",
     "DL3009: delete the apt lists in the same RUN: RUN apt-get update && apt-get install -y "
     "--no-install-recommends jq"),
    ("FROM python:3.11-slim\nRUN apt-get update \\\n  && apt-get install jq \\\n  && rm -rf /var/lib/apt/lists/*\n"
     "USER app\n", "DL3014: apt-get install needs -y: apt-get install jq"),
    ("FROM python:3.11-slim\nRUN cd /tmp && make\nUSER app\n", "DL3003: use WORKDIR instead of cd: RUN cd /tmp && make"),
    ("FROM python:3.11-slim\nCMD python app.py\nUSER app\n", "DL3025: CMD should use the JSON form: CMD python app.py"),
    ("FROM python:3.11-slim\nRUN pip install x\n", "DL3042: pip install without --no-cache-dir (or ENV "
     "PIP_NO_CACHE_DIR): pip install x"),
    ("FROM python:3.11-slim\n", "DL3002: the last USER should not be root"),
    ("FROM python:3.11-slim@sha256:abc\nRUN curl x | sh\nUSER app\n",
     "DL4006: set -o pipefail before a pipe: RUN curl x | sh"),
])
def test_the_lint_catches_what_it_claims(dockerfile, finding):
    assert finding in lint(dockerfile)


def load_compose() -> dict:
    with open(COMPOSE) as f:
        text = f.read()
    try:
        import yaml
    except ImportError:  # structural check only: the services and volumes are named
        for name in ("services:", "master:", "worker-1:", "worker-2:", "submit:", "volumes:"):
            assert re.search(rf"^\s*{name}", text, re.MULTILINE), name
        pytest.skip("PyYAML is not installed: checked the structure only")
    return yaml.safe_load(text)


def test_compose_services_agree_with_each_other_and_with_tfos(monkeypatch):
    compose = load_compose()
    services = compose["services"]
    assert set(services) == {"master", "worker-1", "worker-2", "submit"}
    for name, service in services.items():
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, (name, image)
        build = service.get("build", {})
        assert os.path.normpath(os.path.join(ROOT, "docker", build["context"])) == ROOT
        assert os.path.isfile(os.path.join(ROOT, build["dockerfile"]))
        assert isinstance(service["command"], list), f"{name}: use the exec form"
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], (name, volume)
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: quote port mappings ({port!r})"

    master = services["master"]["command"]
    assert master[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    host = master[master.index("--host") + 1]
    url = f"spark://{host}:{master[master.index('--port') + 1]}"
    assert services["master"]["hostname"] == host
    for worker in ("worker-1", "worker-2"):
        command = services[worker]["command"]
        assert command[:2] == ["spark-class", "org.apache.spark.deploy.worker.Worker"]
        assert command[command.index("--cores") + 1] == "1"  # one task slot: one tfos node
        assert command[-1] == url
        assert "master" in services[worker]["depends_on"]

    submit = services["submit"]
    assert set(submit["depends_on"]) == {"master", "worker-1", "worker-2"}
    assert submit["environment"]["SPARK_LOCAL_IP"] == submit["hostname"]  # not loopback
    command = submit["command"]
    assert command[:2] == ["tfos", "submit"]
    config = parse_submit_args(command[2:])
    assert config.master == url and config.cluster_size == 2
    # the submit line builds (the script is relative to the image's WORKDIR, /opt/tfos = ROOT)
    monkeypatch.chdir(ROOT)
    line = build_command(config, spark_submit="spark-submit", python="/usr/local/bin/python",
                         environ=dict(submit["environment"]))
    words = shlex.split(line.shell())
    assert "spark.cores.max=2" in words and "spark.task.cpus=1" in words
    assert words[-1] == "examples/mnist/keras_mwms.py"
