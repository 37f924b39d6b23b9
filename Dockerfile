# One image for both processes: `web` and `worker` differ only by their command (see Procfile).
# Build:  docker build -t report-service .
# Run:    docker run -e REDIS_URL=... -e PORT=8000 -p 8000:8000 report-service            (web)
#         docker run -e REDIS_URL=... report-service arq worker_settings.WorkerSettings   (worker)
# Local: `docker compose up` (compose.yaml: Redis with AOF, web, worker; `--profile s3` adds MinIO).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN python -m venv /venv
# Dependencies first, in a layer of their own: code changes do not reinstall them. The runtime
# dependencies come from pyproject.toml, pinned by requirements.lock (dev tools stay out). Written to
# a file, not spliced into the command line, where `redis[hiredis]` would be a shell glob.
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /venv/bin/pip install -c requirements.lock -r /tmp/requirements.txt
COPY README.md worker_settings.py ./
COPY service ./service
RUN /venv/bin/pip install --no-deps .

FROM python:3.11-slim
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8000 DATA_DIR=/data
RUN useradd --create-home --uid 10001 app && mkdir -p /data && chown app /data
COPY --from=build /venv /venv
COPY --from=build /app/worker_settings.py /app/worker_settings.py
WORKDIR /app
USER app
EXPOSE 8000
# Role-aware: a web container answers GET /healthz on $PORT; a worker container (no port) is healthy
# when a worker on this host reported to Redis lately (`report-service health --worker`). The role is
# read from the container's command, so the one image checks both right.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["report-service", "health"]
CMD ["sh", "-c", "exec uvicorn --factory service.app:create_app --host 0.0.0.0 --port ${PORT} --proxy-headers --forwarded-allow-ips '*' --timeout-graceful-shutdown 10"]
