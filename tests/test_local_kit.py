"""The local kit agrees with the code and the platform files: ``compose.yaml`` (no Docker engine runs
here: it is read as YAML and held to the Procfile, the Dockerfile and Settings), ``.env.example``
(every setting, with its default), the ``report-service`` console script, and the image's
role-aware health check."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.core.settings import Settings
from service.telemetry.health import role_of
from tests.test_deploy_files import (
    GRACE_SECONDS,
    ROOT,
    dockerfile,
    fly,
    option,
    procfile,
    railway,
    shell_command,
)

SETTINGS_ENV = {name.upper(): name for name in Settings.model_fields}
_DURATION = re.compile(r"(?:(\d+)m)?(?:(\d+)s)?")


def compose() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return config


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def duration(text: str) -> float:
    parts = _DURATION.fullmatch(text)
    assert parts is not None and text, f"not a compose duration: {text!r}"
    return 60.0 * int(parts[1] or 0) + int(parts[2] or 0)


def test_compose_runs_redis_web_and_worker_and_minio_only_under_a_profile() -> None:
    found = services()
    assert {"redis", "web", "worker", "minio"} <= set(found)
    assert all("profiles" not in found[name] for name in ("redis", "web", "worker"))
    assert found["minio"]["profiles"] == ["s3"] and found["bucket"]["profiles"] == ["s3"]
    assert set(compose()["volumes"]) >= {"redis-data", "files"}


def test_compose_redis_keeps_its_data_with_aof_and_says_when_it_is_ready() -> None:
    redis = services()["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and option(command, "--appendonly") == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"][-1] == "ping"
    for name in ("web", "worker"):
        assert services()[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        url = services()[name]["environment"]["REDIS_URL"]
        assert url.startswith("redis://redis:6379/")  # the compose service, by its name


def test_compose_runs_the_procfile_commands_from_the_one_image() -> None:
    web, worker = services()["web"], services()["worker"]
    port = web["environment"]["PORT"]
    assert web["command"] == [word.replace("$PORT", port) for word in procfile()["web"]]
    assert worker["command"] == procfile()["worker"]
    assert web["build"] == worker["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert web["image"] == worker["image"]
    assert [mapping.rsplit(":", 1)[-1] for mapping in web["ports"]] == [port]
    assert "ports" not in worker  # it serves no HTTP


def test_compose_web_and_worker_share_their_files_and_drain_before_they_are_killed() -> None:
    web, worker = services()["web"], services()["worker"]
    for service in (web, worker):
        data_dir = service["environment"]["DATA_DIR"]
        assert f"files:{data_dir}" in service["volumes"]  # PDFs the worker writes, the web reads
        assert "healthcheck" not in service  # the image's role-aware check applies
    assert duration(worker["stop_grace_period"]) > GRACE_SECONDS
    assert duration(web["stop_grace_period"]) > float(
        option(procfile()["web"], "--timeout-graceful-shutdown")
    )


def test_compose_sets_only_settings_that_exist() -> None:
    for name in ("web", "worker"):
        assert set(services()[name]["environment"]) <= set(SETTINGS_ENV), name


def env_example() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, whether the line is commented out, i.e. unset)."""
    entries: dict[str, tuple[str, bool]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        found = re.fullmatch(r"(# )?([A-Z0-9_]+)=(.*)", line)
        if found:
            assert found[2] not in entries, f"{found[2]} is listed twice"
            entries[found[2]] = (found[3], found[1] is not None)
    return entries


def test_env_example_lists_every_setting_once_with_its_default() -> None:
    entries = env_example()
    assert set(entries) == set(SETTINGS_ENV)
    for env_name, (value, unset) in entries.items():
        default = Settings.model_fields[SETTINGS_ENV[env_name]].default
        if default is None:
            assert unset and value == "", f"{env_name} has no default: list it as '# {env_name}='"
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert value == shown, f"{env_name}={value} in .env.example, but its default is {shown}"


def test_env_example_loaded_as_a_dot_env_gives_the_defaults() -> None:
    loaded = Settings(_env_file=ROOT / ".env.example")
    assert loaded == Settings(_env_file=None)


def test_the_console_script_is_the_same_command_line_as_python_m_service(redis_url: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"report-service": "service.__main__:main"}
    script = Path(sys.executable).parent / "report-service"
    assert script.is_file(), "reinstall the package (make .venv/.installed) to get the script"
    env = {"PATH": str(script.parent), "REDIS_URL": redis_url}
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: report-service ")
    created = subprocess.run(
        [str(script), "keys", "create", "--user", "kit", "--plan", "free"],
        capture_output=True, text=True, timeout=30, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "service", "keys", "list"],
        capture_output=True, text=True, timeout=30, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert created.stdout.splitlines()[-1].startswith("rsk_") and " kit " in listed.stdout


@pytest.mark.parametrize(
    ("command", "role"),
    [
        (shell_command(["sh", "-c", shlex.join(procfile()["web"])]), "web"),
        (procfile()["worker"], "worker"),
        ([sys.executable, "/venv/bin/arq", "worker_settings.WorkerSettings"], "worker"),
        ([sys.executable, "-m", "arq", "worker_settings.WorkerSettings"], "worker"),
        (["sh", "-c", "arq worker_settings.WorkerSettings"], "worker"),
        (["/venv/bin/python", "/venv/bin/uvicorn", "--factory", "service.app:create_app"], "web"),
        ([], "web"),
    ],
)
def test_the_health_check_tells_a_worker_from_the_web_by_its_command(command: list[str], role: str) -> None:
    assert role_of(command) == role


def test_every_platform_command_gets_the_health_check_of_its_role() -> None:
    image_command = next(line for line in dockerfile() if line.startswith("CMD "))
    assert role_of(shell_command(yaml.safe_load(image_command[len("CMD ") :]))) == "web"
    assert role_of(services()["web"]["command"]) == "web"
    assert role_of(services()["worker"]["command"]) == "worker"
    assert role_of(shlex.split(fly()["processes"]["worker"])) == "worker"
    assert role_of(shlex.split(railway("worker")["deploy"]["startCommand"])) == "worker"
