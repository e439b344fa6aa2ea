"""The bench's own virtualenv (loadtest/bench/.venv): the peers, the frameworks, wizgy.

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
VENV = os.path.join(BENCH_DIR, ".venv")
RECORD = os.path.join(VENV, "bench-install.json")
CONSTRAINTS = os.path.join(ROOT, "server", "constraints.txt")
INPUTS = [
    CONSTRAINTS,
    os.path.join(ROOT, "server", "pyproject.toml"),
    __file__,
    os.path.join(BENCH_DIR, "requirements.txt"),
]

FRAMEWORKS = ["flask", "pyramid", "django", "matplotlib"]
PEERS = ["gunicorn", "waitress", "granian", "bjoern", "meinheld"]


def python() -> str:
    return os.path.join(VENV, "bin", "python")


def inputs_hash() -> str:
    digest = hashlib.sha256()
    for path in INPUTS:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def load_record() -> dict:
    try:
        with open(RECORD) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def ensure(log=print) -> dict:
    """Build or refresh the venv; return {package: {"ok": bool, "reason"/"note": str}}."""
    record = load_record()
    if record.get("hash") == inputs_hash() and os.path.exists(python()):
        return record["packages"]
    log(f"bench venv: installing into {VENV} (a few minutes the first time)")
    if not os.path.exists(python()):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    packages = {"wizgy": pip(["-e", os.path.join(ROOT, "server")])}
    packages["frameworks"] = pip(FRAMEWORKS)
    for name in PEERS:
        packages[name] = INSTALLERS.get(name, lambda n=name: pip([n]))()
        status = "ok" if packages[name]["ok"] else f"FAILED: {packages[name]['reason']}"
        log(f"bench venv: {name}: {status}")
    with open(RECORD, "w") as f:
        json.dump({"hash": inputs_hash(), "packages": packages}, f, indent=1)
    return packages


def pip(args: list[str]) -> dict:
    done = subprocess.run(
        [
            python(),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-c",
            CONSTRAINTS,
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


def install_bjoern() -> dict:
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
    return pip(["bjoern"])


def install_meinheld() -> dict:
    """meinheld 1.0.2 requires greenlet<0.5, whose C code does not compile on 3.11.

    meinheld's own extension builds and runs with a current greenlet, so when the
    plain install fails, install greenlet and then meinheld without its dependencies.
    """
    plain = pip(["meinheld"])
    if plain["ok"]:
        return plain
    greenlet = pip(["greenlet"])
    if not greenlet["ok"]:
        return {"ok": False, "reason": f"{plain['reason']}; greenlet: {greenlet['reason']}"}
    forced = pip(["--no-deps", "meinheld"])
    if not forced["ok"]:
        return {"ok": False, "reason": f"{plain['reason']}; --no-deps: {forced['reason']}"}
    return {
        "ok": True,
        "note": "installed --no-deps beside greenlet from the constraints: "
        "meinheld 1.0.2 requires greenlet<0.5, whose C code does not compile on "
        f"Python {sys.version_info[0]}.{sys.version_info[1]}",
    }


INSTALLERS = {"bjoern": install_bjoern, "meinheld": install_meinheld}
