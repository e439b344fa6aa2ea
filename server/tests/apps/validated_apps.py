"""The workshop's three apps (apps/), each wrapped in wsgiref.validate.validator.

Served as `validated_apps:flask`, `validated_apps:pyramid`, `validated_apps:django`.
Each framework is imported only when its app is asked for, so a server loads
(and Django migrates) just the one it runs. The validator reports protocol
slips as WSGIWarning on stderr, and hard violations as AssertionError (a 500).
"""

import importlib
from wsgiref.validate import validator

MODULES = {"flask": "flaskapp", "pyramid": "pyramidapp", "django": "djangoapp"}


def __getattr__(name: str):
    if name not in MODULES:
        raise AttributeError(name)
    app = validator(importlib.import_module(MODULES[name]).app)
    globals()[name] = app
    return app
