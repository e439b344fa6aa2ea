"""The soak's short variant: loadtest/soak.py for 16 s on two models, inside `make test`.

`make soak` runs the same script for 10 minutes on every model. Here: evloop (the
pre-fork master and its workers) and fork (a child per connection, reaped as it
goes), each under 10 Locust users of the Flask app; every check must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

MODELS = ["evloop", "fork"]


def test_a_short_soak_stays_flat(tmp_path):
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "soak.py"), "--models", ",".join(MODELS),
         "--duration", "16", "--warmup", "5", "--interval", "2", "--users", "10",
         "--json", str(out)],
        capture_output=True, text=True, timeout=180, check=False)
    print(result.stdout)
    assert out.exists(), result.stdout + result.stderr
    report = json.loads(out.read_text())
    verdicts = {r["model"]: {name: c["ok"] for name, c in r["checks"].items()}
                for r in report["results"]}
    assert list(verdicts) == MODELS
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    for r in report["results"]:
        assert r["locust"]["requests"] > 100, r["model"]  # the load did run
        assert len(r["samples"]) >= 6, r["model"]  # and was sampled throughout
