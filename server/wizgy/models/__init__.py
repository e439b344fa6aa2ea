"""The concurrency models, by name. Each is one file, readable in one sitting."""

from __future__ import annotations

from importlib import import_module

# What the main process runs, by Settings.main_model. -k evloop (like sync and gthread)
# is the prefork master; its workers run evloop.py's EventLoopModel (prefork.py).
MODELS = {
    "iterative": "iterative:IterativeModel",
    "threaded": "threaded:ThreadedModel",
    "fork": "fork:ForkModel",
    "prefork": "prefork:PreforkModel",
}


def get(name: str):
    """The model class the main process runs for Settings.main_model."""
    module, _, cls = MODELS[name].partition(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)
