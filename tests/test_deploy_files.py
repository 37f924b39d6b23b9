"""The platform files (Procfile, Dockerfile, Fly, Railway, Grafana) agree with each other and the code."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from service.app import create_app
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GRACE_SECONDS = Settings.model_fields["worker_grace_seconds"].default
SECRETS = {"REDIS_URL", "ANTHROPIC_API_KEY", "SIGNING_SECRET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = (line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): shlex.split(command) for name, command in entries}


def fly() -> dict[str, Any]:
    return tomllib.loads((DEPLOY / "fly.toml").read_text())


def railway(service: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((DEPLOY / f"railway.{service}.json").read_text())
    return config


def dockerfile() -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def shell_command(argv: list[str]) -> list[str]:
    """``sh -c "exec uvicorn ... ${PORT}"`` → the command it runs, with ``$PORT`` spelled one way."""
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        argv = shlex.split(argv[2])
    if argv and argv[0] == "exec":
        argv = argv[1:]
    return [word.replace("${PORT}", "$PORT") for word in argv]


def seconds(duration: int | str) -> float:
    """A fly.toml duration: ``45`` or ``"45s"`` (what ``fly config save`` writes), ``"1m30s"``."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None and duration, f"not a duration: {duration!r}"
    return 60.0 * int(parts[1] or 0) + int(parts[2] or 0)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def app_routes() -> dict[str, set[str]]:
    app = create_app(Settings(_env_file=None), configure_logs=False)
    return {route.path: route.methods or set() for route in app.routes if isinstance(route, Route)}


def test_the_procfile_commands_start_what_the_code_provides() -> None:
    processes = procfile()
    assert set(processes) == {"web", "worker"}
    web = processes["web"]
    assert web[:2] == ["uvicorn", "--factory"]
    module, _, factory = web[2].partition(":")
    assert callable(getattr(importlib.import_module(module), factory))
    # Every interface: the platform's proxy reaches the process from outside its container.
    assert option(web, "--host") == "0.0.0.0" and option(web, "--port") == "$PORT"  # noqa: S104
    assert processes["worker"][0] == "arq"
    module, _, attribute = processes["worker"][1].rpartition(".")
    options = getattr(importlib.import_module(module), attribute)
    assert options["cron_jobs"] and options["on_startup"] and options["handle_signals"] is False


def test_the_health_paths_are_routes_of_the_app() -> None:
    routes = app_routes()
    assert "GET" in routes["/healthz"] and "GET" in routes["/readyz"]
    assert [check["path"] for check in fly()["http_service"]["checks"]] == ["/readyz"]
    assert railway("web")["deploy"]["healthcheckPath"] == "/readyz"


def test_fly_runs_the_procfile_with_the_port_and_grace_it_needs() -> None:
    config, processes = fly(), procfile()
    assert set(config["processes"]) == set(processes)
    port = config["http_service"]["internal_port"]
    assert port == int(config["env"]["PORT"]) == 8000
    expected_web = [word.replace("$PORT", str(port)) for word in processes["web"]]
    assert shlex.split(config["processes"]["web"]) == expected_web  # Fly runs it without a shell
    assert shlex.split(config["processes"]["worker"]) == processes["worker"]
    assert config["http_service"]["processes"] == ["web"]
    assert config["kill_signal"] == "SIGTERM"
    grace = float(config["env"].get("WORKER_GRACE_SECONDS", GRACE_SECONDS))
    uvicorn_grace = float(option(processes["web"], "--timeout-graceful-shutdown"))
    assert seconds(config["kill_timeout"]) > max(GRACE_SECONDS, grace, uvicorn_grace)
    assert (DEPLOY / config["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert {vm_size["processes"][0] for vm_size in config["vm"]} == {"web", "worker"}


def test_railway_runs_the_procfile_and_drains_longer_than_the_grace() -> None:
    processes = procfile()
    web, worker = railway("web")["deploy"], railway("worker")["deploy"]
    assert shell_command(shlex.split(web["startCommand"])) == processes["web"]  # $PORT needs the shell
    assert shlex.split(worker["startCommand"]) == processes["worker"]
    assert "healthcheckPath" not in worker  # the worker serves no HTTP: a check would fail every deploy
    assert worker["drainingSeconds"] > GRACE_SECONDS
    assert web["drainingSeconds"] >= float(option(processes["web"], "--timeout-graceful-shutdown"))
    for service in ("web", "worker"):
        config = railway(service)
        assert (
            config["build"]["builder"] == "DOCKERFILE"
            and (ROOT / config["build"]["dockerfilePath"]).is_file()
        )
        assert config["deploy"]["restartPolicyType"] in {"ON_FAILURE", "ALWAYS"}


def test_no_secret_is_written_into_a_platform_file() -> None:
    assert not SECRETS & set(fly().get("env", {}))
    texts = [(DEPLOY / name).read_text() for name in ("fly.toml", "railway.web.json", "railway.worker.json")]
    assert not any(re.search(r"sk-ant-|rsk_|AKIA[0-9A-Z]{12}", text) for text in texts)


def test_the_image_is_multi_stage_slim_non_root_and_checks_its_health() -> None:
    instructions = dockerfile()
    stages = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert len(stages) >= 2 and all(image == "python:3.11-slim" for image in stages)
    final_stage = instructions[max(i for i, line in enumerate(instructions) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    healthcheck = next(line for line in final_stage if line.startswith("HEALTHCHECK "))
    # Role-aware (tests/test_local_kit.py): GET /healthz in a web container, Redis reports in a worker's.
    assert json.loads(healthcheck.partition(" CMD ")[2]) == ["report-service", "health"]
    command = json.loads(next(line for line in final_stage if line.startswith("CMD "))[len("CMD ") :])
    assert shell_command(command) == procfile()["web"]  # one image; the worker passes its own command
    assert any(line.startswith("COPY") and "worker_settings.py" in line for line in final_stage)
    assert "EXPOSE 8000" in final_stage


def test_the_docker_context_leaves_out_local_state() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".data"} <= ignored


# --- the Grafana dashboard ------------------------------------------------------------------------

COUNTERS = {
    "report_service_reports_submitted_total": {"plan", "outcome"},
    "report_service_http_requests_total": {"route", "method", "status"},
    "report_service_jobs_finished_total": {"plan", "state"},
    "report_service_job_retries_total": {"plan", "reason"},
    "report_service_llm_tokens_total": {"model", "kind"},
    "report_service_llm_cost_usd_total": {"model"},
    "report_service_provider_errors_total": {"model", "status"},
}
HISTOGRAMS = {
    "report_service_http_request_duration_seconds": {"route"},
    "report_service_job_queue_wait_seconds": {"plan"},
    "report_service_job_run_seconds": {"plan"},
    "report_service_llm_limiter_wait_seconds": {"model"},
}
GAUGES = {
    "report_service_queue_depth": {"lane"},
    "report_service_jobs_active": {"plan"},
    "report_service_worker_jobs_in_flight": {"worker"},
    "report_service_sse_subscribers": {"node"},
    "report_service_event_loop_lag_seconds": {"process", "node"},
    "report_service_workers": set(),
}
METRICS: dict[str, set[str]] = {
    **COUNTERS,
    **GAUGES,
    **{f"{name}_{part}": labels for name, labels in HISTOGRAMS.items() for part in ("sum", "count")},
    **{f"{name}_bucket": labels | {"le"} for name, labels in HISTOGRAMS.items()},
}
_SELECTOR = re.compile(r"\b(report_service_[a-z_]+)(?:\{([^}]*)\})?")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((DEPLOY / "grafana" / "report-service.json").read_text())
    return board


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels += [panel, *panel.get("panels", [])]
    return panels


def expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in all_panels(board) for target in panel.get("targets", [])]


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41 and board["uid"] and board["title"]
    assert [item["name"] for item in board["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in all_panels(board)]
    assert len(ids) == len(set(ids))
    for panel in all_panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}" and panel["targets"], panel["title"]


def test_every_expression_uses_only_the_service_metrics_and_their_labels() -> None:
    used: set[str] = set()
    for expr in expressions(dashboard()):
        selectors = _SELECTOR.findall(expr)
        assert selectors, expr
        labels_in_scope: set[str] = set()
        for name, matchers in selectors:
            assert name in METRICS, f"unknown metric {name} in {expr}"
            matched = {part.split("=")[0].strip(" !~") for part in matchers.split(",") if part.strip()}
            assert matched <= METRICS[name], f"{name} has no label {matched - METRICS[name]} in {expr}"
            labels_in_scope |= METRICS[name]
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            used.add(family if family in HISTOGRAMS else name)
        for grouping in _GROUPING.findall(expr):
            grouped = {label.strip() for label in grouping.split(",") if label.strip()}
            assert grouped <= labels_in_scope, f"grouping by {grouped - labels_in_scope} in {expr}"
    assert used == set(COUNTERS) | set(HISTOGRAMS) | set(GAUGES)  # every metric has a panel


@pytest.mark.parametrize(
    "title",
    [
        "Submissions by outcome",
        "Jobs finished by state",
        "Queue depth per lane",
        "Queue wait p50 / p95 per plan",
        "Run time p95 per plan",
        "Tokens per minute by model",
        "Estimated cost per hour by model",
        "Provider 429 / 529 per second",
        "Limiter wait p95 by model",
        "In-flight jobs per worker",
        "SSE subscribers per API instance",
        "Event-loop lag",
        "HTTP p95 latency by route",
        "HTTP 5xx per second by route",
    ],
)
def test_the_dashboard_has_the_panel(title: str) -> None:
    assert title in {panel["title"] for panel in all_panels(dashboard())}
