"""WSGI config for the helloworld project.

It exposes the WSGI callable as a module-level variable named ``application``
and applies migrations on import, so any WSGI server can run the project from a
fresh checkout without a separate `manage.py migrate` step.
"""

import fcntl
import os

from django.conf import settings
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helloworld.settings")

application = get_wsgi_application()


def migrate():
    database = settings.DATABASES["default"]["NAME"]
    # Several servers may start at once on one database file (tests, replicas):
    # one migrates, the others wait and then find nothing to do.
    with open(f"{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        call_command("migrate", interactive=False, verbosity=0)
    # A pre-fork server imports this module once and then forks its workers: no
    # SQLite connection may cross that fork (SQLite forbids it), so drop them;
    # each worker opens its own on its first query.
    connections.close_all()


migrate()
