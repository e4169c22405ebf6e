"""The README's Flask-Session and Starlette examples, taken from README.md and run against memcached.

Each example is the code block after its bold heading in the "Client
library" section, executed as written except for the server address; a
browser-like test client then makes two requests with the cookie it got and
the session must count both visits, and the session must be on the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from scatterhoard import Client
from tests.support import ROOT, require_module
from tests.test_client_commands import quick_memcached

pytestmark = pytest.mark.timeout(60)


def example(heading: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Client library"):]
    match = re.search(r"\*\*" + re.escape(heading) + r"\*\*.*?```python\n(.*?)```", section, re.S)
    assert match, f"no {heading} example in the README's Client library section"
    code = match.group(1)
    assert code.count("127.0.0.1:11211") == 1
    return code


@pytest.fixture(scope="module")
def memcached_port() -> Iterator[int]:
    with quick_memcached() as port:
        yield port


def run_example(heading: str, port: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"readme_{heading.lower().replace('-', '_')}"}
    exec(compile(example(heading).replace("127.0.0.1:11211", f"127.0.0.1:{port}"), f"README {heading}", "exec"),
         namespace)
    return namespace


def test_flask_session_example(memcached_port: int) -> None:
    require_module("flask_session")
    app = run_example("Flask-Session", memcached_port)["app"]
    with app.test_client() as browser:
        assert browser.get("/").get_json() == {"visits": 1}
        assert browser.get("/").get_json() == {"visits": 2}
        cookie = browser.get_cookie("session")
        assert cookie is not None
    with Client(f"127.0.0.1:{memcached_port}") as c:
        assert c.get("session:" + cookie.value) is not None  # Flask-Session's key prefix
    with app.test_client() as stranger:
        assert stranger.get("/").get_json() == {"visits": 1}


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_starlette_example(memcached_port: int) -> None:
    require_module("starlette")
    require_module("httpx")
    from starlette.testclient import TestClient

    app = run_example("Starlette", memcached_port)["app"]
    with TestClient(app) as browser:
        assert browser.get("/").json() == {"visits": 1}
        assert browser.get("/").json() == {"visits": 2}
        sid = browser.cookies["sid"]
    with Client(f"127.0.0.1:{memcached_port}", serde="json") as c:
        assert c.get(f"session:{sid}") == {"visits": 2}
