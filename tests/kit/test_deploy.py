"""deploy/ agrees with the app: the image, the compose file and the Kubernetes manifests run
real `quyu` commands with real options, name only real settings, probe paths the app serves,
and their secrets, once generated as documented, let a production process start.

No Docker and no cluster: the files are parsed and checked against the app's own objects."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import typer.core
import typer.main
from fastapi import FastAPI

from app.cli import cli
from app.config import ConfigError, Settings

# PyYAML comes with the dev tools (schemathesis, openapi-spec-validator) and has no stubs.
yaml: Any = importlib.import_module("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PLACEHOLDER = "change-me"
QUYU_VAR = re.compile(r"\bQUYU_[A-Z0-9_]+\b")
POD_KINDS = {"Deployment", "Job"}


# --- reading the files ---------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def docker_args(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile() if kw == keyword]


def dockerfile_cmd() -> list[str]:
    (cmd,) = docker_args("CMD")
    argv: list[str] = json.loads(cmd)
    return argv


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in docker_args("ENV"):
        for pair in rest.split():
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    return document


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text("utf-8")) if d)
    return docs


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s_docs():
        if doc["kind"] in POD_KINDS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            yield f"{name}/{container['name']}", container


class EnvExample:
    """deploy/.env.example: the active assignments, every variable named (comments too) and
    the `python -c "…"` command documented above each active assignment."""

    def __init__(self) -> None:
        self.text = (DEPLOY / ".env.example").read_text(encoding="utf-8")
        self.values: dict[str, str] = {}
        self.generators: dict[str, str] = {}
        command: str | None = None
        for raw in self.text.splitlines():
            line = raw.strip()
            if not line:
                command = None
            elif found := re.fullmatch(r'#\s*python -c "(.+)"', line):
                command = found.group(1)
            elif not line.startswith("#"):
                name, _, value = line.partition("=")
                self.values[name.strip()] = value.strip()
                if command is not None:
                    self.generators[name.strip()] = command
                command = None

    def generate(self, name: str) -> str:
        """Run the documented command, as someone filling in the file would."""
        result = subprocess.run(  # noqa: S603  (our own file's command, no shell)
            [sys.executable, "-c", self.generators[name]],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?message}`."""
    return re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: env[m.group(1)], value)


def production_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings from exactly `env`: the test run's own QUYU_ variables are removed first."""
    for name in list(os.environ):
        if name.upper().startswith("QUYU_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


# --- `quyu …` commands ----------------------------------------------------------------------


def quyu_commands() -> list[tuple[str, list[str]]]:
    """Every `quyu …` command line of the image, the compose file and the manifests."""
    found: list[tuple[str, list[str]]] = [("Dockerfile CMD", dockerfile_cmd())]
    for name, service in compose()["services"].items():
        if "command" in service:
            found.append((f"compose {name}", list(service["command"])))
    for where, container in containers():
        argv = [*container.get("command", []), *container.get("args", [])]
        found.append((f"k8s {where}", argv or dockerfile_cmd()))
    return found


class NoSuchCommand(LookupError):
    pass


def check_quyu_command(argv: list[str]) -> str:
    """Parse argv with the Typer app's own command (without running it) and return the
    subcommand.  An unknown command raises NoSuchCommand; unknown options and bad option
    values raise Typer's UsageError (a TyperException)."""
    assert argv[0] == "quyu", argv
    group = typer.main.get_command(cli)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands.get(argv[1])
    if command is None:
        raise NoSuchCommand(f"no command {argv[1]!r}; there are {sorted(group.commands)}")
    command.make_context(argv[1], list(argv[2:]))
    return argv[1]


class TestCommands:
    def test_every_quyu_command_and_option_exists(self) -> None:
        for where, argv in quyu_commands():
            try:
                check_quyu_command(argv)
            except (NoSuchCommand, typer.TyperException) as error:
                pytest.fail(f"{where}: {' '.join(argv)}: {error}")

    def test_the_check_catches_mistakes(self) -> None:
        for argv in (
            ["quyu", "serv"],
            ["quyu", "serve", "--wokers", "2"],
            ["quyu", "serve", "--workers", "0"],
            ["quyu", "worker", "--loop"],
        ):
            with pytest.raises((NoSuchCommand, typer.TyperException)):
                check_quyu_command(argv)

    def test_compose_and_k8s_run_migrate_api_and_worker(self) -> None:
        services = compose()["services"]
        image_cmd = dockerfile_cmd()
        in_compose = {
            check_quyu_command(list(s.get("command", image_cmd)))
            for s in services.values()
            if "build" in s
        }
        in_k8s = {check_quyu_command(argv) for where, argv in quyu_commands() if "k8s" in where}
        assert {"migrate", "serve", "worker"} <= in_compose
        assert {"migrate", "serve", "worker"} <= in_k8s

    def test_image_serves_on_all_addresses_at_the_exposed_port(self) -> None:
        cmd = dockerfile_cmd()
        assert cmd[:2] == ["quyu", "serve"]
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104
        port = cmd[cmd.index("--port") + 1]
        assert docker_args("EXPOSE") == [port]
        assert int(cmd[cmd.index("--workers") + 1]) >= 2


# --- settings --------------------------------------------------------------------------------


class TestSettingNames:
    @pytest.mark.parametrize(
        "path",
        [
            "deploy/Dockerfile",
            "deploy/compose.yaml",
            "deploy/.env.example",
            "deploy/k8s/configmap.yaml",
            "deploy/k8s/secret.example.yaml",
            "deploy/k8s/api.yaml",
            "deploy/k8s/worker.yaml",
            "deploy/k8s/migrate-job.yaml",
        ],
    )
    def test_every_quyu_variable_is_a_setting(self, path: str) -> None:
        names = set(QUYU_VAR.findall((ROOT / path).read_text(encoding="utf-8")))
        fields = {name.lower() for name in Settings.model_fields}
        unknown = sorted(n for n in names if n.removeprefix("QUYU_").lower() not in fields)
        assert not unknown, f"{path} names settings that app.config.Settings lacks: {unknown}"

    def test_the_k8s_directory_holds_no_other_files(self) -> None:
        # The parametrized list above covers every manifest.
        assert sorted(p.name for p in K8S.iterdir()) == [
            "api.yaml",
            "configmap.yaml",
            "migrate-job.yaml",
            "secret.example.yaml",
            "worker.yaml",
        ]

    def test_image_runs_in_production(self) -> None:
        assert dockerfile_env()["QUYU_ENV"] == "production"


def compose_env(example: EnvExample, values: dict[str, str]) -> dict[str, str]:
    """What a quyu container of the compose file gets: the env file, then `environment`."""
    environment = {
        k: interpolate(str(v), values)
        for k, v in compose()["services"]["api"]["environment"].items()
    }
    return {k: v for k, v in values.items() if k.startswith("QUYU_")} | environment


class TestEnvExample:
    def test_placeholders_are_refused_in_production(self, monkeypatch: pytest.MonkeyPatch) -> None:
        example = EnvExample()
        with pytest.raises(ConfigError) as refused:
            production_settings(monkeypatch, compose_env(example, example.values))
        placeholders = [n for n, v in example.values.items() if v == PLACEHOLDER]
        assert placeholders
        for name in placeholders:
            if name.startswith("QUYU_"):
                assert name in str(refused.value), f"{name} is not a required setting"

    def test_generated_values_start_in_production(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The list of required settings is complete and each documented command makes a
        value that the production check accepts."""
        example = EnvExample()
        values = dict(example.values)
        for name, value in example.values.items():
            if value == PLACEHOLDER:
                assert name in example.generators, f"no `python -c` command above {name}"
                values[name] = example.generate(name)
        settings = production_settings(monkeypatch, compose_env(example, values))
        assert settings.env == "production"
        assert settings.database_url.startswith("postgresql+asyncpg://quyu:")
        assert settings.database_url.endswith("@postgres:5432/quyu")
        assert values["POSTGRES_PASSWORD"] in settings.database_url

    def test_keys_are_different(self) -> None:
        example = EnvExample()
        keys = [example.generate(n) for n in ("QUYU_FIELD_ENCRYPTION_KEY", "QUYU_BLIND_INDEX_KEY")]
        assert keys[0] != keys[1]


# --- compose -----------------------------------------------------------------------------------


class TestCompose:
    def test_postgres_16_with_a_health_check(self) -> None:
        postgres = compose()["services"]["postgres"]
        assert postgres["image"].split(":")[1].split(".")[0] == "16"
        assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    @pytest.mark.parametrize("service", ["api", "worker"])
    def test_starts_after_the_migration(self, service: str) -> None:
        services = compose()["services"]
        assert services[service]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        assert services["migrate"]["command"] == ["quyu", "migrate"]
        assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services["migrate"]["restart"] == "no"

    def test_quyu_services_use_the_image_the_env_file_and_postgres(self) -> None:
        document = compose()
        services = document["services"]
        example = EnvExample()
        built = {n: s for n, s in services.items() if "build" in s}
        assert set(built) == {"migrate", "api", "worker"}
        for name, service in built.items():
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
            assert (DEPLOY / service["build"]["context"] / "deploy/Dockerfile").is_file()
            assert service["env_file"] == ".env", name
            env = service["environment"]
            assert env["QUYU_ENV"] == "production"
            url = interpolate(env["QUYU_DATABASE_URL"], example.values)
            host = re.fullmatch(r"postgresql\+asyncpg://[^@/]+@([^:/]+):5432/quyu", url)
            assert host is not None, url
            assert host.group(1) in services
        # Every ${VAR} the file interpolates is in the env file.
        text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
        for var in re.findall(r"\$\{(\w+)", text):
            assert var in example.values, f"compose.yaml uses ${{{var}}}; add it to .env.example"

    def test_the_api_is_published_on_its_port_and_the_worker_is_not_health_checked(
        self,
    ) -> None:
        services = compose()["services"]
        api = services["api"]
        port = api["command"][api["command"].index("--port") + 1]
        assert f"8000:{port}" in api["ports"]
        assert services["worker"]["healthcheck"] == {"disable": True}
        assert services["migrate"]["healthcheck"] == {"disable": True}

    def test_uploads_volume_is_the_storage_dir(self) -> None:
        mounts = [v.split(":")[1] for v in compose()["services"]["api"]["volumes"]]
        assert dockerfile_env()["QUYU_STORAGE_DIR"] in mounts

    def test_services_are_given_the_time_they_take_to_stop(self) -> None:
        """`docker compose stop` sends SIGTERM, then SIGKILL after `stop_grace_period` (10 s
        unless said): the API needs its shutdown bound, the worker one send, and a margin."""
        services = compose()["services"]
        fields = Settings.model_fields
        margin = 3
        shutdown = fields["shutdown_timeout_seconds"].default
        assert compose_seconds(services["api"]["stop_grace_period"]) >= shutdown + margin
        # One message in flight: an access-token fetch with its retries, then the send.
        timeout = fields["wechat_timeout_seconds"].default
        token_fetch = (fields["wechat_retries"].default + 1) * timeout
        worker = compose_seconds(services["worker"]["stop_grace_period"])
        assert worker >= token_fetch + timeout + margin
        assert "stop_grace_period" not in services["migrate"]  # it is not stopped, it ends


def compose_seconds(duration: str) -> float:
    """A compose duration (`35s`, `1m30s`, `1.5s`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# --- the image ------------------------------------------------------------------------------------


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class TestImage:
    def test_stages_are_python_311_slim(self) -> None:
        args = dict(a.split("=", 1) for a in docker_args("ARG") if "=" in a)
        bases = [
            interpolate(rest.split()[0], args).replace("$", "") for rest in docker_args("FROM")
        ]
        assert len(bases) >= 2
        assert set(bases) == {"python:3.11-slim"}

    def test_runs_as_the_non_root_user_k8s_expects(self) -> None:
        (user,) = docker_args("USER")
        uid = user.split(":")[0]
        assert uid.isdigit() and uid != "0"  # numeric, so that runAsNonRoot can verify it
        for where, spec in pod_specs():
            context = spec["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert str(context["runAsUser"]) == uid, where

    def test_health_check_probes_the_served_port(self) -> None:
        (check,) = docker_args("HEALTHCHECK")
        found = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
        assert found is not None
        assert found.group(1) == docker_args("EXPOSE")[0]
        assert found.group(2) == "/healthz"
        assert "curl" not in check and "wget" not in check

    def test_the_wheel_is_built_with_its_migrations(self) -> None:
        """`quyu migrate` reads the migrations from the installed `quyu_migrations` package
        (setup.py maps alembic/ to it), so the build stage needs setup.py and alembic/."""
        copied = {s for rest in docker_args("COPY") for s in rest.split()[:-1]}
        assert {"pyproject.toml", "setup.py", "app", "alembic"} <= copied
        setup_py = (ROOT / "setup.py").read_text()
        assert '"quyu_migrations": "alembic"' in setup_py
        assert '"quyu_migrations.versions"' in setup_py

    def test_build_context_has_what_the_image_copies_and_no_secrets(self) -> None:
        ignored = dockerignore()
        sources = [s for rest in docker_args("COPY") for s in rest.split()[:-1]]
        sources = [s for s in sources if not s.startswith("--")]
        assert sources
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, p) for p in ignored), f"{source} ignored"
        for must in (".git", ".venv", "var", "*.db", ".quyu-secrets.json", ".env", "**/.env"):
            assert must in ignored, f".dockerignore lacks {must}"


# --- Kubernetes ----------------------------------------------------------------------------------


class TestKubernetes:
    def test_resources(self) -> None:
        kinds = sorted((d["kind"], d["metadata"]["name"]) for d in k8s_docs())
        assert kinds == [
            ("ConfigMap", "quyu-config"),
            ("Deployment", "quyu-api"),
            ("Deployment", "quyu-worker"),
            ("Job", "quyu-migrate"),
            ("Secret", "quyu-secrets"),
            ("Service", "quyu-api"),
        ]
        (api,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "quyu-api"]
        assert api["spec"]["replicas"] == 2

    def test_selectors_match_labels(self) -> None:
        for doc in k8s_docs():
            if doc["kind"] == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (service,) = k8s_kind("Service")
        (api,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "quyu-api"]
        assert (
            service["spec"]["selector"].items()
            <= api["spec"]["template"]["metadata"]["labels"].items()
        )
        port_names = {p["name"] for p in api["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names

    def test_env_comes_from_the_configmap_and_the_secret(self) -> None:
        (config,) = k8s_kind("ConfigMap")
        (secret,) = k8s_kind("Secret")
        for where, container in containers():
            refs = {
                (kind, ref[kind]["name"])
                for ref in container["envFrom"]
                for kind in ("configMapRef", "secretRef")
                if kind in ref
            }
            assert refs == {
                ("configMapRef", config["metadata"]["name"]),
                ("secretRef", secret["metadata"]["name"]),
            }, where

    def test_containers_are_locked_down_and_bounded(self) -> None:
        images = set()
        for where, container in containers():
            images.add(container["image"])
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            if context.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                writable_tmp = "/tmp"  # noqa: S108  (`serve --workers N` makes a directory there)
                assert writable_tmp in mounts, f"{where}: read-only root needs a /tmp volume"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
        assert len(images) == 1

    def test_migration_job_runs_once(self) -> None:
        (job,) = k8s_kind("Job")
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] in {"Never", "OnFailure"}
        assert spec["containers"][0]["command"] == ["quyu", "migrate"]

    def test_pods_stop_on_their_own_within_the_grace_period(self) -> None:
        """SIGTERM comes after the preStop pause; `quyu serve` then cuts what is still open
        after QUYU_SHUTDOWN_TIMEOUT_SECONDS (the configmap's, else the default) and exits,
        all before the grace period ends and the kubelet kills it."""
        (config,) = k8s_kind("ConfigMap")
        default = Settings.model_fields["shutdown_timeout_seconds"].default
        shutdown = int(config["data"].get("QUYU_SHUTDOWN_TIMEOUT_SECONDS", default))
        deployments = {d["metadata"]["name"]: d for d in k8s_kind("Deployment")}
        api = deployments["quyu-api"]["spec"]["template"]["spec"]
        (container,) = api["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", command
        pause = int(command[1])
        # Long enough for the endpoints to be updated everywhere, so that no request is
        # sent to a process that has stopped accepting.
        assert pause >= 5
        margin = 3
        assert api["terminationGracePeriodSeconds"] >= pause + shutdown + margin
        worker = deployments["quyu-worker"]["spec"]["template"]["spec"]
        assert worker["terminationGracePeriodSeconds"] >= shutdown + margin

    @pytest.mark.committing  # /readyz opens a connection of its own (see tests/conftest.py)
    async def test_probes_hit_paths_the_app_serves(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        paths = set(app.openapi()["paths"])
        (api,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "quyu-api"]
        container = api["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
        expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path
            assert path in paths
            assert port_names.get(get["port"], get["port"]) == 8000
            assert (await client.get(f"http://test{path}")).status_code == 200

    def test_data_values_are_strings_and_the_secret_is_a_template(self) -> None:
        (config,) = k8s_kind("ConfigMap")
        (secret,) = k8s_kind("Secret")
        assert "data" not in secret  # stringData only: nothing base64-encoded to hide in
        for mapping in (config["data"], secret["stringData"]):
            for key, value in mapping.items():
                assert isinstance(value, str), f"{key}: Kubernetes wants strings"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, f"{key} looks like a real secret"

    def test_required_secrets_are_in_the_secret(self) -> None:
        (secret,) = k8s_kind("Secret")
        example = EnvExample()
        required = {n for n, v in example.values.items() if v == PLACEHOLDER and "QUYU_" in n}
        assert required <= set(secret["stringData"])
        assert "QUYU_DATABASE_URL" in secret["stringData"]  # it holds the password

    def test_filled_in_manifests_start_in_production(self, monkeypatch: pytest.MonkeyPatch) -> None:
        (config,) = k8s_kind("ConfigMap")
        (secret,) = k8s_kind("Secret")
        example = EnvExample()
        env = config["data"] | secret["stringData"]
        with pytest.raises(ConfigError):
            production_settings(monkeypatch, env)
        filled = {
            name: (
                example.generate(name)
                if value == PLACEHOLDER and name in example.generators
                else value.replace(PLACEHOLDER, secrets.token_urlsafe(24))
            )
            for name, value in env.items()
        }
        settings = production_settings(monkeypatch, filled)
        assert settings.env == "production"
        assert settings.database_url.startswith("postgresql+asyncpg://")
