"""The Django admin in the stack: a demo superuser whose random password is printed
once in the server's log and by `make admin-password`, logging in through nginx."""

from __future__ import annotations

import re

import pytest
import requests

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]


def log_in(base: str, password: str) -> requests.Response:
    """The admin's login form as a browser fills it in; the page it lands on."""
    session = requests.Session()
    form = session.get(f"{base}/admin/login/?next=/admin/", timeout=30)
    assert form.status_code == 200, form.status_code
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return session.post(
        f"{base}/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": "admin", "password": password,
              "next": "/admin/"},
        timeout=30,
    )  # fmt: skip


def test_admin_password_logs_in_through_nginx(stack):
    stack.up("server", "nginx", APP="django")
    password = stack.make("admin-password").strip().splitlines()[-1]
    assert len(password) >= 16, password

    logs = stack.compose("logs", "--no-color", "server").stdout
    assert logs.count(password) == 1, logs[-2000:]  # printed once
    assert f"user admin, password {password}" in logs

    base = f"http://127.0.0.1:{stack.nginx_port}"
    page = log_in(base, password)
    assert page.status_code == 200 and page.url.endswith("/admin/"), page.url
    assert "Site administration" in page.text and "Log out" in page.text
    wrong = log_in(base, password + "x")
    assert "Site administration" not in wrong.text
    assert "Please enter the correct username and password" in wrong.text

    # Another container, another password: none is fixed.
    stack.compose("up", "-d", "--force-recreate", "--wait", "server", APP="django")
    assert stack.make("admin-password").strip().splitlines()[-1] != password
