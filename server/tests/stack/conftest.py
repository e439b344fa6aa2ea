"""The Docker stack under test: `docker compose` driven as a subprocess.

    def test_something(stack):
        stack.up(APP="pyramid")            # builds nothing: the images fixture did
        stack.get("/hello")                # through nginx on a free 127.0.0.1 port
        stack.exec("server", "ulimit -n")  # bash inside the server container

Every stack runs as its own compose project (wizgy-test-<pid>) on free ports, so a
workshop stack started with `make up` keeps running untouched. Each test's stack is
removed with `down -v --remove-orphans` whatever the outcome; a failing test first
saves the compose logs under test-artifacts/stack/.

Without Docker these tests are skipped, except under CI=true, where they fail.
WIZGY_STACK_BUILD=0 skips the image build (images already built by `make build`).
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts" / "stack"
BUILD_TIMEOUT = 20 * 60


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.stack)


def docker_problem() -> str | None:
    """Why the stack cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=True)
    except (subprocess.SubprocessError, OSError):
        return "the Docker engine does not answer (docker info)"
    try:
        subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=True
        )
    except (subprocess.SubprocessError, OSError):
        return "no docker compose plugin"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def abandoned(project: str) -> bool:
    """A wizgy-test-PID project whose pytest is gone (never another live run's)."""
    if not project.startswith("wizgy-test-"):
        return False
    pid = project.removeprefix("wizgy-test-")
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_test_projects() -> None:
    """Containers and networks of this run's test projects, and of runs that were
    killed; a test run still going on in parallel keeps its own."""
    label = "label=com.docker.compose.project"
    for kind, listing in (("container", ["ps", "-a"]), ("network", ["network", "ls"])):
        found = subprocess.run(
            ["docker", *listing, "--filter", label, "--format",
             '{{.ID}} {{.Label "com.docker.compose.project"}}'],
            check=False, capture_output=True, text=True, timeout=60,
        ).stdout.split("\n")  # fmt: skip
        ids = [line.split()[0] for line in found
               if line.strip() and abandoned(line.partition(" ")[2].strip())]
        if ids:
            subprocess.run(
                ["docker", kind, "rm", "-f", *ids], check=False, capture_output=True, timeout=120
            )


@pytest.fixture(scope="session")
def docker():
    problem = docker_problem()
    if problem:  # .ci/run installs and starts Docker, so under CI this fails
        skip_or_fail(f"stack tests need Docker: {problem} (.ci/run installs and starts it)")
    remove_test_projects()
    yield
    remove_test_projects()


@pytest.fixture(scope="session")
def images(docker) -> None:
    """Build the base (offline if need be) and the three images, once per session."""
    if os.environ.get("WIZGY_STACK_BUILD") == "0":
        return
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "build"],
        check=False,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    if result.returncode != 0:
        pytest.fail(f"make build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    print(f"stack images built in {time.monotonic() - started:.0f} s")


class Stack:
    """One compose project on free ports; `env` feeds the compose file's variables."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nginx_port = free_port()
        self.locust_port = free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": name,
            "NGINX_PORT": str(self.nginx_port),
            "LOCUST_PORT": str(self.locust_port),
        }
        for variable in ("APP", "WIZGY_MODEL", "WIZGY_LESSON", "WIZGY_WORKERS", "WIZGY_SHAPE"):
            self.env.pop(variable, None)
        if self.env.get("RUNTIME") == "pypy" and not self.env.get("SERVER_TAG"):
            # the image `make build` named (Makefile: SERVER_TAG), when pytest runs alone
            self.env["SERVER_TAG"] = (self.env.get("IMAGE_TAG") or "latest") + "-pypy"
        self.started = False

    def compose(self, *args: str, timeout: float = 300, check: bool = True, **env: str):
        result = subprocess.run(
            ["docker", "compose", "-f", str(REPO / "docker-compose.yml"), *args],
            check=False,
            cwd=REPO,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def up(self, *services: str, scale: dict[str, int] | None = None, **env: str) -> None:
        """Start (or recreate) services with these variables; wait until healthy."""
        self.env.update(env)
        scale_args = [f"--scale={name}={n}" for name, n in (scale or {}).items()]
        self.started = True
        self.compose("up", "-d", "--wait", "--wait-timeout", "120", *scale_args, *services)

    def make(self, *targets: str, timeout: float = 600, **env: str) -> str:
        """`make TARGET` in the repository for this stack (its project name and ports
        come from the environment, as for a workshop's own stack); its output."""
        self.started = True
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(REPO), *targets],
            check=False, env={**self.env, **env}, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"make {' '.join(targets)} exited " \
            f"{result.returncode}:\n{output[-4000:]}"
        return output

    def down(self) -> None:
        if self.started:
            self.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)

    def save_logs(self, test_name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{test_name}.log"
        logs = self.compose("logs", "--no-color", "--timestamps", check=False)
        ps = self.compose("ps", "-a", check=False)
        path.write_text(ps.stdout + "\n" + logs.stdout + logs.stderr)
        return path

    def exec(self, service: str, script: str, replica: int = 0) -> str:
        """Run a bash script in a running container of `service` (the oldest running
        replica first: after a switch, the server's container #1 is gone and #2 runs);
        its stdout."""
        names = self.compose("ps", "--format", "{{.Name}}", service).stdout.split()
        names.sort(key=lambda name: int(name.rsplit("-", 1)[1]))
        result = subprocess.run(["docker", "exec", "-i", names[replica], "bash", "-c", script],
                                check=False, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"docker exec {names[replica]} bash -c {script!r} exited "
                                 f"{result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def run_python(self, service: str, code: str, *, timeout: float = 120) -> str:
        """Run Python in a fresh container of `service` on the stack's network."""
        return self.compose(
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--entrypoint",
            "python3",
            service,
            "-c",
            code,
            timeout=timeout,
        ).stdout

    def request(self, method: str, path: str, headers: dict | None = None):
        """One request through nginx: (status, headers, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.nginx_port, timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def get_json(self, path: str, headers: dict | None = None) -> dict:
        status, _, body = self.request("GET", path, headers)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def locust(self, out: Path, *, users: int, run_time: str, **env: str) -> list[dict]:
        """Locust headless in a fresh container of the locust image, aimed at nginx;
        returns the rows of its stats CSV. Fails on a non-zero exit (any failure)."""
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o777)  # the locust user (uid 10002) writes here
        result = self.compose(
            "run", "--rm", "--no-deps", "-T", "-v", f"{out}:/out",
            *[arg for name, value in env.items() for arg in ("-e", f"{name}={value}")],
            "locust", "--headless", "--users", str(users), "--spawn-rate", str(users),
            "--run-time", run_time, "--host", "http://nginx:8080",
            "--csv", "/out/locust", "--html", "/out/locust.html", "--only-summary",
            timeout=300, check=False,
        )  # fmt: skip
        (out / "locust-output.txt").write_text(result.stdout + result.stderr)
        with open(out / "locust_stats.csv", newline="") as stats:
            rows = list(csv.DictReader(stats))
        assert result.returncode == 0, (
            f"locust exited {result.returncode}; failures:\n"
            + (out / "locust_failures.csv").read_text()
            + result.stderr[-3000:]
        )
        return rows


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def stack(request, images):
    """A fresh compose project for one test; always removed afterwards."""
    project = Stack(f"wizgy-test-{os.getpid()}")
    yield project
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    try:
        if failed and project.started:
            print(f"compose logs: {project.save_logs(request.node.name)}")
    finally:
        project.down()
