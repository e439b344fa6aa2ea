"""The bench's own virtualenvs: the peers, the frameworks, wizgy. One per runtime:
loadtest/bench/.venv on the CPython running the harness (server/constraints.txt), and
loadtest/bench/.venv-pypy on Debian's pypy3 (server/constraints-pypy.txt), built only
when a PyPy server is benched.

Each peer is installed by its own pip call, so one that fails to build is recorded
with its reason and the rest still install; the harness then reports it as
"not installed: <reason>". The record (.venv/bench-install.json) carries a hash of
what the install depended on; when those files change, the next run installs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(BENCH_DIR))
PYPY = "pypy3"  # Debian's: apt-get install pypy3 pypy3-venv
VENVS = {"cpython": os.path.join(BENCH_DIR, ".venv"), "pypy": os.path.join(BENCH_DIR, ".venv-pypy")}
CONSTRAINTS = {
    "cpython": os.path.join(ROOT, "server", "constraints.txt"),
    "pypy": os.path.join(ROOT, "server", "constraints-pypy.txt"),
}
INPUTS = [
    os.path.join(ROOT, "server", "pyproject.toml"),
    __file__,
    os.path.join(BENCH_DIR, "requirements.txt"),
]

# matplotlib draws the chart: the CPython venv's job only.
FRAMEWORKS = {"cpython": ["flask", "pyramid", "django", "matplotlib"],
              "pypy": ["flask", "pyramid", "django"]}  # fmt: skip
PEERS = ["gunicorn", "waitress", "granian", "bjoern", "meinheld"]


def python(runtime: str = "cpython") -> str:
    return os.path.join(VENVS[runtime], "bin", "python")


def record_path(runtime: str) -> str:
    return os.path.join(VENVS[runtime], "bench-install.json")


def inputs_hash(runtime: str) -> str:
    digest = hashlib.sha256()
    for path in [CONSTRAINTS[runtime], *INPUTS]:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def load_record(runtime: str) -> dict:
    try:
        with open(record_path(runtime)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def ensure(log=print, runtime: str = "cpython") -> dict:
    """Build or refresh the runtime's venv; return {package: {"ok": bool, "reason"/"note": str}}."""
    record = load_record(runtime)
    if record.get("hash") == inputs_hash(runtime) and os.path.exists(python(runtime)):
        return record["packages"]
    base = sys.executable if runtime == "cpython" else shutil.which(PYPY)
    if base is None:
        reason = f"{PYPY} not found (apt-get install pypy3 pypy3-venv)"
        return {name: {"ok": False, "reason": reason} for name in ["wizgy", "frameworks", *PEERS]}
    log(f"bench venv: installing into {VENVS[runtime]} (a few minutes the first time)")
    if not os.path.exists(python(runtime)):
        subprocess.run([base, "-m", "venv", VENVS[runtime]], check=True)
    packages = {"wizgy": pip(["-e", os.path.join(ROOT, "server")], runtime)}
    packages["frameworks"] = pip(FRAMEWORKS[runtime], runtime)
    for name in PEERS:
        install = INSTALLERS.get(name)
        packages[name] = install(runtime) if install else pip([name], runtime)
        status = "ok" if packages[name]["ok"] else f"FAILED: {packages[name]['reason']}"
        log(f"bench venv ({runtime}): {name}: {status}")
    with open(record_path(runtime), "w") as f:
        json.dump({"hash": inputs_hash(runtime), "packages": packages}, f, indent=1)
    return packages


def pip(args: list[str], runtime: str = "cpython") -> dict:
    done = subprocess.run(
        [
            python(runtime),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-c",
            CONSTRAINTS[runtime],
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        return {"ok": True}
    return {"ok": False, "reason": error_line(done.stderr or done.stdout)}


def error_line(output: str) -> str:
    """The line of pip's output that says why, shortened."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower() and "subprocess-exited-with-error" not in line:
            return line[:200]
    return (lines[-1] if lines else "pip failed")[:200]


def install_bjoern(runtime: str) -> dict:
    """bjoern compiles against libev: install libev-dev from Debian first when missing."""
    if not os.path.exists("/usr/include/ev.h"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            return {"ok": False, "reason": "libev-dev missing (apt-get install libev-dev as root)"}
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", "libev-dev"],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
            done = subprocess.run(
                ["apt-get", "install", "-y", "-q", "libev-dev"],
                check=False,
                capture_output=True,
                text=True,
            )
        if done.returncode != 0:
            return {
                "ok": False,
                "reason": "apt-get install libev-dev: " + error_line(done.stderr or done.stdout),
            }
    return pip(["bjoern"], runtime)


def install_meinheld(runtime: str) -> dict:
    """meinheld 1.0.2 requires greenlet<0.5, whose C code does not compile on 3.11.

    meinheld's own extension builds and runs with a current greenlet, so when the
    plain install fails, install greenlet and then meinheld without its dependencies.
    """
    plain = pip(["meinheld"], runtime)
    if plain["ok"] or runtime == "pypy":  # PyPy ships its own greenlet
        return plain
    greenlet = pip(["greenlet"], runtime)
    if not greenlet["ok"]:
        return {"ok": False, "reason": f"{plain['reason']}; greenlet: {greenlet['reason']}"}
    forced = pip(["--no-deps", "meinheld"], runtime)
    if not forced["ok"]:
        return {"ok": False, "reason": f"{plain['reason']}; --no-deps: {forced['reason']}"}
    return {
        "ok": True,
        "note": "installed --no-deps beside greenlet from the constraints: "
        "meinheld 1.0.2 requires greenlet<0.5, whose C code does not compile on "
        f"Python {sys.version_info[0]}.{sys.version_info[1]}",
    }


INSTALLERS = {"bjoern": install_bjoern, "meinheld": install_meinheld}
