"""The pages of a server of several apps (issue 14): the overview at the server's root,
one login for every app, and each app's dashboard under ``/apps/<app>/`` with every link,
form, script and fetch under that base.

In process, as tests/api/test_many_apps.py builds it: the real loader (config/apps.py),
one store for every app, the whole HTTP surface (api/apps.py's dispatch) through
FastAPI's TestClient. The links are checked by parsing the HTML the server sends and
following them."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config.apps import load_apps
from entrega.plane import ControlPlane, build_plane
from entrega.rollouts.model import (
    PauseStep,
    Phase,
    RolloutSpec,
    WeightStep,
    initial_state,
    spec_to_dict,
    state_to_dict,
)
from entrega.web.login import safe_next
from tests.insights.stack import TOKENS, make_stack, seed_history

ADMIN, WEB_TEAM, VIEWER = "ent_admin_token", "ent_web_team_token", "ent_viewer_token"
OURS = {"X-Entrega-Actor": "dashboard"}  # what static/forms.js and dashboard.js add
STATIC = Path(__file__).resolve().parents[2] / "src" / "entrega" / "web" / "static"
HOSTILE = "<script>alert('x')</script>"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


FILE = f"""\
server: {{listen: "127.0.0.1:7997"}}
auth:
  tokens:
    admin: {{role: admin, sha256: {sha(ADMIN)}}}
    web-team: {{role: deployer, sha256: {sha(WEB_TEAM)}, apps: [web]}}
    viewer: {{role: viewer, sha256: {sha(VIEWER)}}}
apps:
  - app: api
    run: {{command: "python app.py"}}
    environments:
      - name: staging
        router: {{kind: embedded, listen: "127.0.0.1:18111"}}
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:18112"}}
  - app: web
    run: {{command: "python app.py"}}
    environments:
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:18113"}}
  - app: worker
    run: {{command: "python worker.py"}}
    environments:
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:18114"}}
"""


def seed_canary(plane: ControlPlane) -> int:
    """web: v1 live in production, v2 a canary at 20% on its second step (of three),
    with a rollout message a browser must not take for markup."""
    repo = plane.service("web").repo
    now = time.time()
    for version in ("v1", "v2"):
        repo.add_release(app="web", version=version, digest="sha256:" + "0" * 64,
                         artifact_path="/nonexistent", actor="ci", meta={})
    first = repo.create_rollout(app="web", environment="production", version="v1",
                                from_version=None, strategy="direct",
                                spec=spec_to_dict(RolloutSpec(strategy="direct")),
                                state=state_to_dict(initial_state(stable=None, canary="v1",
                                                                  now=now)),
                                actor="ci", reason="")
    live = {**state_to_dict(initial_state(stable=None, canary="v1", now=now)),
            "phase": Phase.SUCCEEDED.value, "weights": {"v1": 100}}
    repo.save_transition(first.id, state=live, phase="succeeded", events=[], actor="ci",
                         current_version="v1", set_current=True)
    spec = RolloutSpec(strategy="canary",
                       steps=(WeightStep(20), PauseStep(None), WeightStep(100)))
    paused = {**state_to_dict(initial_state(stable="v1", canary="v2", now=now)),
              "phase": Phase.PAUSED.value, "step_index": 1,
              "weights": {"v1": 80, "v2": 20}, "message": HOSTILE}
    canary = repo.create_rollout(app="web", environment="production", version="v2",
                                 from_version="v1", strategy="canary",
                                 spec=spec_to_dict(spec), state=paused, actor="ci", reason="")
    repo.save_transition(canary.id, state=paused, phase="paused", events=[], actor="ci")
    return canary.id


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    (tmp_path / "entrega.yaml").write_text(FILE)
    built, store = build_plane(load_apps(tmp_path / "entrega.yaml"))
    for service in built:
        service.repo.sync_app(service.app, [e.name for e in service.config.environments])
    yield built
    store.close()


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane), raise_server_exceptions=False,
                    follow_redirects=False) as client:
        yield client


class Links(HTMLParser):
    """Every href, src and form action of a page, and its ``<body data-base>``."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.base: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "action") and value is not None:
                self.links.append((tag, name, value))
            if tag == "body" and name == "data-base":
                self.base = value or ""

    def absolute(self) -> list[str]:
        return [value for _, _, value in self.links if value.startswith("/")]

    def followed(self) -> list[str]:
        """The absolute links a browser GETs (forms post: they are checked elsewhere)."""
        return [value for _, attr, value in self.links
                if attr != "action" and value.startswith("/")]


def log_in(client: TestClient, token: str, *, at: str = "", next: str = "/") -> None:
    answer = client.post(f"{at}/login", data={"token": token, "next": next}, headers=OURS)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == next
    assert "Path=/;" in answer.headers["set-cookie"] + ";"


def outside(links: list[str], base: str) -> list[str]:
    return [link for link in links if link != "/" and not link.startswith(base + "/")]


# -- the overview ------------------------------------------------------------------------


def test_the_overview_needs_a_login_at_the_servers_root(client: TestClient) -> None:
    first = client.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/"
    form = client.get("/login?next=/")
    assert form.status_code == 200 and "Log in to entrega" in form.text
    page = Links(form.text)
    assert ("form", "action", "/login") in page.links and page.base == ""
    assert page.followed() == ["/ui/static/dashboard.css", "/", "/ui/static/forms.js"]
    for link in ("/ui/static/dashboard.css", "/ui/static/forms.js"):  # served at the root too
        assert client.get(link).status_code == 200, link
    refused = client.post("/login", data={"token": "ent_wrong", "next": "/"}, headers=OURS)
    assert refused.status_code == 401 and "That token is not valid." in refused.text
    forced = client.post("/login", data={"token": ADMIN}, headers={"Origin": "https://x.example"})
    assert forced.status_code == 403 and "set-cookie" not in forced.headers


def test_the_overview_shows_every_app_with_its_rollouts(client: TestClient,
                                                        plane: ControlPlane) -> None:
    rollout = seed_canary(plane)
    log_in(client, VIEWER)
    html = client.get("/").text
    cards = re.findall(r'data-app="([^"]+)"', html)
    assert cards == ["api", "web", "worker"]
    web = html.split('data-app="web"')[1].split('data-app="worker"')[0]
    assert f"#{rollout} v1 → <b>v2</b>" in web and 'data-phase="paused"' in web
    assert "v1 80%, v2 20%" in web and "step 2 of 3: pause" in web
    # a rollout's message is the user's words: escaped in the page and in its JSON
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in web
    assert "\\u003cscript\\u003e" in html.split('id="initial-apps"')[1]
    # the page starts from what GET /api/v1/apps answers (what its script polls)
    polled = client.get("/api/v1/apps")
    assert polled.status_code == 200  # with the login cookie, as the script sends it
    assert [a["app"] for a in polled.json()["apps"]] == cards
    overview = STATIC.joinpath("overview.js").read_text()
    assert "fetch(`${BASE}/api/v1/apps`" in overview


def test_every_link_of_the_overview_resolves(client: TestClient) -> None:
    log_in(client, ADMIN)
    page = Links(client.get("/").text)
    apps = [v for _, _, v in page.links if v.startswith("/apps/")]
    assert apps == ["/apps/api/", "/apps/web/", "/apps/worker/"]
    assert set(page.absolute()) - set(apps) == {
        "/", "/ui/static/dashboard.css", "/ui/static/forms.js", "/ui/static/overview.js",
        "/logout"}
    for link in page.followed():
        answer = client.get(link)
        assert answer.status_code == 200, (link, answer.text[:200])
    for app in ("api", "web", "worker"):  # each link opens that app's own dashboard
        dashboard = client.get(f"/apps/{app}/")
        assert f"<title>entrega · {app}</title>" in dashboard.text
        assert Links(dashboard.text).base == f"/apps/{app}"


def test_a_token_limited_to_apps_sees_those_apps_only(client: TestClient) -> None:
    log_in(client, WEB_TEAM)
    html = client.get("/").text
    assert re.findall(r'data-app="([^"]+)"', html) == ["web"] and "1 of 3" in html
    assert [a["app"] for a in client.get("/api/v1/apps").json()["apps"]] == ["web"]
    assert client.get("/apps/web/").status_code == 200
    # another app's page: the login form, saying why; the cookie stays (it serves web)
    other = client.get("/apps/api/")
    assert other.status_code == 303
    assert other.headers["location"] == "/apps/api/login?next=/apps/api/"
    assert "set-cookie" not in other.headers
    why = client.get(other.headers["location"])
    assert why.status_code == 200
    assert ("web-team&#39;s token is limited to the apps web, not api: log in with a token "
            "for api.") in why.text
    assert 'href="/">Every app of this server' in why.text
    state = client.get("/apps/api/ui/state.json")
    assert state.status_code == 403
    assert state.json() == {"error": "web-team's token is limited to the apps web, not api",
                            "login": "/apps/api/login"}
    assert client.get("/apps/web/ui/state.json").json()["app"] == "web"
    # nor can it log in on that app's page
    refused = client.post("/apps/api/login", data={"token": WEB_TEAM, "next": "/apps/api/"},
                          headers=OURS)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    assert "limited to the apps web, not api" in refused.text


def test_logout_at_the_root_logs_out_of_every_app(client: TestClient) -> None:
    log_in(client, ADMIN)
    assert client.get("/apps/api/").status_code == 200
    out = client.post("/logout", headers=OURS)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'entrega_token=""' in out.headers["set-cookie"]
    assert client.get("/apps/api/").status_code == 303
    assert client.get("/").status_code == 303


# -- an app's dashboard under /apps/<app>/ -----------------------------------------------


def test_login_at_an_app_then_the_overview_and_other_apps_work(client: TestClient) -> None:
    first = client.get("/apps/worker/")
    assert first.status_code == 303
    assert first.headers["location"] == "/apps/worker/login?next=/apps/worker/"
    form = Links(client.get(first.headers["location"]).text)
    assert ("form", "action", "/apps/worker/login") in form.links
    log_in(client, VIEWER, at="/apps/worker", next="/apps/worker/")
    assert client.get("/apps/worker/").status_code == 200
    assert client.get("/apps/api/").status_code == 200  # one login, every app
    assert client.get("/").status_code == 200


def test_an_apps_pages_link_only_under_its_base(client: TestClient,
                                                plane: ControlPlane) -> None:
    seed_canary(plane)
    log_in(client, ADMIN)
    html = client.get("/apps/web/").text
    page = Links(html)
    assert page.base == "/apps/web"
    assert outside(page.absolute(), "/apps/web") == []
    assert ("a", "href", "/") in page.links  # the brand: the overview
    for expected in ("/apps/web/", "/apps/web/releases/v2", "/apps/web/ui/static/dashboard.js",
                     "/apps/web/ui/static/forms.js", "/apps/web/ui/static/dashboard.css"):
        assert expected in page.absolute(), expected
    assert ("form", "action", "/apps/web/logout") in page.links
    for link in page.followed():
        answer = client.get(link)
        assert answer.status_code == 200, (link, answer.text[:200])
    login = Links(client.get("/apps/web/login").text)
    assert outside(login.absolute(), "/apps/web") == []
    assert ("form", "action", "/apps/web/login") in login.links


def test_the_scripts_fetch_under_the_pages_base(client: TestClient,
                                                plane: ControlPlane) -> None:
    rollout = seed_canary(plane)
    log_in(client, WEB_TEAM)
    base = Links(client.get("/apps/web/").text).base
    script = STATIC.joinpath("dashboard.js").read_text()
    # every path dashboard.js fetches or goes to starts with the page's base ...
    assert re.findall(r"""(?:fetch\(|window\.location = )[`"']/""", script) == []
    assert "fetch(`${BASE}/ui/state.json`" in script
    assert "fetch(`${BASE}/api/v1/environments/${encodeURIComponent(env)}/${action}`" in script
    # ... and answers there: the state it polls, and a button's POST (the cookie + header)
    state = client.get(f"{base}/ui/state.json")
    assert state.status_code == 200 and state.json()["app"] == "web"
    assert state.json()["caller"]["can_deploy"] is True
    promote = client.post(f"{base}/api/v1/environments/production/promote", json={},
                          headers=OURS)
    assert promote.status_code == 200, promote.text
    assert promote.json() == {"rollout": rollout}
    history = client.get(f"{base}/ui/state.json").json()["history"]
    assert any("promoted" in e["message"] and e["actor"] == "web-team" for e in history)
    # without our pages' header, the cookie changes nothing (another site's form)
    forged = client.post(f"{base}/api/v1/environments/production/abort", json={})
    assert forged.status_code == 403


def test_the_release_page_links_back_to_its_app(client: TestClient,
                                                plane: ControlPlane) -> None:
    seed_canary(plane)
    log_in(client, VIEWER)
    report = client.get("/apps/web/releases/v2")
    assert report.status_code == 200 and "Scorecard" in report.text
    page = Links(report.text)
    assert ("a", "href", "/apps/web/") in page.links
    assert outside(page.absolute(), "/apps/web") == []
    client.cookies.clear()
    again = client.get("/apps/web/releases/v2")
    assert again.headers["location"] == "/apps/web/login?next=/apps/web/releases/v2"


# -- a single-app server: as it always was -------------------------------------------------


async def test_a_single_app_servers_pages_are_at_the_root(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    seed_history(stack)
    first = await stack.client.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/"
    answer = await stack.client.post("/login", data={"token": TOKENS["viewer"], "next": "/"},
                                     headers=OURS)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    html = (await stack.client.get("/")).text
    page = Links(html)
    assert page.base == ""
    assert '<a class="brand" href="/">entrega</a><span class="app">shop</span>' in html
    assert {"/", "/ui/static/dashboard.css", "/ui/static/forms.js",
            "/ui/static/dashboard.js", "/releases/v2", "/logout"} <= set(page.absolute())
    assert all(not link.startswith("/apps/") for link in page.absolute())
    report = await stack.client.get("/releases/v2")
    assert 'href="/"' in report.text
    logout = await stack.client.post("/logout", headers=OURS)
    assert logout.headers["location"] == "/login"



@pytest.mark.parametrize(("target", "home", "expected"), [
    ("/apps/web/releases/v2", "/apps/web/", "/apps/web/releases/v2"),
    ("/", "/apps/web/", "/"),  # the overview, from an app's login: still this server
    (None, "/apps/web/", "/apps/web/"),
    ("", "/", "/"),
    ("//evil.example/", "/apps/web/", "/apps/web/"),
    ("/\\evil.example/", "/", "/"),  # browsers read a backslash as a slash
    ("https://evil.example/", "/", "/"),
], ids=["in-the-app", "the-overview", "none", "empty", "protocol-relative", "backslash",
        "absolute-url"])
def test_login_returns_only_to_a_path_of_this_server(target: str | None, home: str,
                                                     expected: str) -> None:
    assert safe_next(target, home=home) == expected
