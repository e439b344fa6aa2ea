"""URL configuration for the helloworld project."""

from demo import views
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import path, re_path

urlpatterns = [
    path("hello", views.hello),
    path("echo", views.echo),
    path("stream", views.stream),
    path("headers", views.headers),
    path("sleep", views.sleep),
    path("upload", views.upload),
    path("admin/", admin.site.urls),
    # What `runserver --insecure` does: the staticfiles finders serve the
    # workshop's files and the admin's CSS with DEBUG off, no extra package.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
