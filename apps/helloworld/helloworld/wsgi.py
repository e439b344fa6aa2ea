"""WSGI config for the helloworld project.

It exposes the WSGI callable as a module-level variable named ``application``
and applies migrations on import, so any WSGI server can run the project from a
fresh checkout without a separate `manage.py migrate` step.
"""

import fcntl
import os

from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helloworld.settings")

application = get_wsgi_application()


def migrate():
    from django.conf import settings

    database = settings.DATABASES["default"]["NAME"]
    # Several servers may start at once on one database file (tests, replicas):
    # one migrates, the others wait and then find nothing to do.
    with open(f"{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        call_command("migrate", interactive=False, verbosity=0)


migrate()
