"""A file of several apps (config/apps.py): what it declares, and each mistake named by
file, line and field as written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from entrega.config import load_config
from entrega.config.apps import load_apps
from entrega.errors import ConfigError

APP = """\
  - app: {name}
    run: {{command: "python app.py"}}
    environments:
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:{port}"}}
"""
TOP = 'server: {listen: "127.0.0.1:7997"}\nstate_dir: shared-state\napps:\n'


def write(root: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for name, body in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    (root / "entrega.yaml").write_text(text)
    return root / "entrega.yaml"


def test_apps_inline_and_from_a_folder_share_the_server(tmp_path: Path) -> None:
    worker = "app: worker\nrun: {command: \"python w.py\"}\nenvironments:\n" \
             "  - name: production\n    router: {kind: embedded, listen: \"127.0.0.1:18203\"}\n"
    path = write(tmp_path, TOP + APP.format(name="api", port=18201)
                 + APP.format(name="web", port=18202) + "apps_dir: apps\n",
                 {"apps/worker.yaml": worker})
    apps = load_apps(path)
    assert apps.many and apps.names == ("api", "web", "worker")
    for config in apps:
        assert config.one_of_many
        assert config.server.listen == "127.0.0.1:7997"
        assert config.state_path == (tmp_path / "shared-state").resolve()
    assert apps.app("web").environments[0].router.listen == "127.0.0.1:18202"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="declares 3 apps .api, web, worker."):
        apps.app(None)
    with pytest.raises(ConfigError, match="no app named 'shop'"):
        apps.app("shop")


def test_a_single_app_file_is_read_as_before(tmp_path: Path) -> None:
    path = write(tmp_path, 'app: shop\nrun: {command: "python app.py"}\nenvironments:\n'
                           '  - name: production\n'
                           '    router: {kind: embedded, listen: "127.0.0.1:18209"}\n')
    apps = load_apps(path)
    assert not apps.many and apps.names == ("shop",)
    assert apps.app(None) == load_config(path) and not apps.app(None).one_of_many


SHA = hashlib.sha256(b"t").hexdigest()


@pytest.mark.parametrize(("text", "files", "expected"), [
    pytest.param(TOP + APP.format(name="api", port=18201) + "retention: {keep: 3}\n", {},
                 "entrega.yaml:9: retention: an app's field at the top", id="app-field-on-top"),
    pytest.param(TOP + APP.format(name="api", port=18201) + '    store: {url: "sqlite://"}\n',
                 {}, "entrega.yaml:9: apps[0].store: store is the server's",
                 id="shared-field-in-an-app"),
    pytest.param(TOP + APP.format(name="api", port=18201) + APP.format(name="web", port=18202)
                 .replace('"python app.py"', '""'), {},
                 "entrega.yaml:10: apps[1].run.command: must not be empty",
                 id="an-apps-mistake-names-the-entry"),
    pytest.param(TOP + APP.format(name="api", port=18201) + APP.format(name="api", port=18202),
                 {}, "two apps are called 'api'", id="same-name-twice"),
    pytest.param(TOP + APP.format(name="api", port=18201) + APP.format(name="web", port=18201),
                 {}, "web/production's router listens on 127.0.0.1:18201, as "
                     "api/production's does", id="one-listener-two-apps"),
    pytest.param("auth:\n  tokens:\n    t: {role: viewer, sha256: " + SHA + ", apps: [web]}\n"
                 + TOP + APP.format(name="api", port=18201), {},
                 "entrega.yaml:3: auth.tokens.t.apps: token 't' names apps that are not "
                 "declared: web", id="token-for-an-unknown-app"),
    pytest.param(TOP + APP.format(name="api", port=18201) + "apps_dir: nowhere\n", {},
                 "apps_dir: nowhere is not a directory", id="apps-dir-missing"),
    pytest.param(TOP.replace("apps:\n", "apps_dir: apps\n"),
                 {"apps/web.yaml": "app: web\nrun: {command: x}\nenvironments: []\n"},
                 "apps/web.yaml:3: environments: ", id="a-file-of-the-folder-names-itself"),
    pytest.param(TOP + "  - 12\n", {}, "entrega.yaml:4: apps[0]: expected an app",
                 id="an-entry-that-is-no-app"),
    pytest.param(TOP.replace("apps:\n", "apps: []\n"), {}, "no apps declared",
                 id="no-apps"),
])
def test_mistakes_name_file_line_and_field(tmp_path: Path, text: str,
                                          files: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_apps(write(tmp_path, text, files))
    assert expected in str(caught.value)
