"""wizgy: a WSGI server built from first principles (HTTP/1.1, PEP 3333)."""

__version__ = "0.1.0"
