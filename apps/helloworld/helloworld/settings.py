"""Django settings for the workshop's helloworld project.

Production-shaped (DEBUG off) so what attendees measure is what a deployment
runs; everything a container needs to change comes from the environment.
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "django-insecure-wizgy-workshop-dev-key-change-me-in-production",
)
DEBUG = False
# The app sits behind wizgy (and nginx in the stack) on whatever name the
# attendee uses; the workshop has no host to protect.
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "helloworld.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "helloworld.wsgi.application"

# SQLite, the embedded default. The default path is per user under the temp
# dir: the project dir may be read-only (a container's non-root user).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_SQLITE_PATH",
            os.path.join(
                tempfile.gettempdir(), f"wizgy-helloworld-{os.getuid()}.sqlite3"
            ),
        ),
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Served by Django itself (see urls.py): the shared apps/static folder and the
# admin's own assets, found by the staticfiles finders.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR.parent / "static"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
