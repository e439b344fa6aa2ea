"""The concurrency models, by name. Each is one file, readable in one sitting."""

from __future__ import annotations

from importlib import import_module

MODELS = {
    "iterative": "iterative:IterativeModel",
    "threaded": "threaded:ThreadedModel",
    "evloop": "evloop:EventLoopModel",
    "fork": "fork:ForkModel",
    "prefork": "prefork:PreforkModel",
}


def get(name: str):
    """The model class for a (canonical) model name."""
    module, _, cls = MODELS[name].partition(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)
