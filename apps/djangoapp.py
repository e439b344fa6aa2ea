"""The workshop's Django project as a WSGI callable: `wizgy --chdir apps djangoapp:app`.

The tutorial's shape: put the project folder on sys.path and hand its
``helloworld.wsgi.application`` to the server.
"""

import os
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helloworld")
)

from helloworld import wsgi

app = wsgi.application
