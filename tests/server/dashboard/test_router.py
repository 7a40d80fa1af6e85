"""The dashboard's files as gd-serve serves them (server/routers/dashboard.py): the page and
every file it loads, with the headers that keep the token on this server, nothing else."""

import dataclasses
import re

import httpx
import pytest

from server.routers.dashboard import DASHBOARD, HEADERS, dashboard_files
from tests.helpers.live import TOKEN, LiveServer
from tests.helpers.loopback import http


@pytest.fixture(scope="module")
def server(test_settings):
    """The page needs no event store to be served."""
    live = LiveServer(dataclasses.replace(test_settings, events_db="off"))
    yield live
    live.stop()


def get(server, path: str, **kw) -> httpx.Response:
    return http.get(server.url + path, timeout=10, **kw)


def referenced(text: str) -> set[str]:
    """The local files an HTML page (`src`, `href`) or a JS module (`from "./x.js"`) loads."""
    names = set(re.findall(r'(?:src|href)="/dashboard/([^"]+)"', text))
    return names | set(re.findall(r'from "\./([^"]+)"', text))


def test_the_page_is_served_without_a_token_and_the_api_still_wants_one(server):
    page = get(server, "/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    assert get(server, "/v1/model").status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert get(server, "/v1/model", headers=headers).status_code == 200


def test_every_file_the_page_loads_is_served_with_its_type_and_headers(server):
    seen, todo = set(), ["index.html"]
    while todo:
        name = todo.pop()
        seen.add(name)
        r = get(server, "/" if name == "index.html" else f"/dashboard/{name}")
        assert r.status_code == 200, name
        for key, value in HEADERS.items():
            assert r.headers[key] == value, (name, key)
        kind = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
        assert r.headers["content-type"].startswith(kind[name.rsplit(".", 1)[1]]), name
        base = name.rpartition("/")[0]
        found = {n if "/" in n or not base else f"{base}/{n}" for n in referenced(r.text)}
        todo += sorted(found - seen - set(todo))
    # the page, its two modules, its styles and the vendored chart library with its styles
    assert seen == {"index.html", "app.js", "api.js", "style.css",
                    "vendor/uPlot.esm.js", "vendor/uPlot.min.css"}  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/nothing.js",
        "/dashboard/vendor/uPlot.LICENSE",  # present, but not a type the page loads
        "/dashboard/%2e%2e/routers/dashboard.py",
        "/dashboard/..%2fapp.py",
        "/dashboard//etc/passwd",
        "/dashboard/",
    ],
)
def test_anything_else_is_not_found(server, path):
    r = get(server, path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_a_token_in_the_url_is_refused_on_the_page_too(server):
    r = get(server, "/?token=abc")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "token_in_url"


def test_only_files_of_the_served_types_are_listed(tmp_path):
    for name in ("index.html", "a.js", "notes.txt", "sub/b.css", "sub/c.py", "sub/d"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    assert sorted(dashboard_files(tmp_path)) == ["a.js", "index.html", "sub/b.css"]


def test_the_vendored_chart_library_keeps_its_licence():
    licence = (DASHBOARD / "vendor" / "uPlot.LICENSE").read_text()
    assert licence.startswith("The MIT License")
    assert "(v1.6.32)" in (DASHBOARD / "vendor" / "uPlot.esm.js").read_text()[:400]
