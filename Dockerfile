# syntax=docker/dockerfile:1
# One image for every role: `columba api`, `worker`, `smtp`, `inbound`, `migrate` (and the
# operator's `keys`, `domains`, `doctor`); docker-compose.yml chooses the command.
#
# Reproducible: the base image is pinned by digest and every Python package by version and
# hash (requirements.lock, requirements-build.lock; `make lock` regenerates them).
#
# python:3.11.16-slim-bookworm, multi-platform index (amd64, arm64, arm/v7, 386, ppc64le) as
# docker-library/repo-info records it (repos/python/remote/3.11.16-slim-bookworm.md, built
# 2026-09-01). To move on: take the new digest from that file, or
# `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
RUN python -m venv /opt/columba
ENV PATH=/opt/columba/bin:$PATH
WORKDIR /srv/columba
COPY requirements-build.lock requirements.lock ./
# setuptools first, hash-checked: it then builds the one sdist among the dependencies (dkimpy)
# and the project without build isolation, so pip fetches no unpinned build tool.
RUN pip install --require-hashes --no-deps -r requirements-build.lock \
 && pip install --require-hashes --no-deps --no-build-isolation -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Editable on purpose: `columba migrate` finds migrations/ beside app/ (app/core/migrate.py),
# which a regular install into site-packages would leave behind.
RUN pip install --no-deps --no-build-isolation -e . \
 && python -m compileall -q app worker migrations \
 && rm -f requirements.lock requirements-build.lock

FROM ${PYTHON_IMAGE}
# COLUMBA_VAR_DIR: the one writable directory (the embedded Redis's socket when no
# COLUMBA_REDIS_URL is given); everything else is read-only to the service's user.
ENV PATH=/opt/columba/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COLUMBA_VAR_DIR=/var/lib/columba
RUN groupadd --system --gid 10001 columba \
 && useradd --system --uid 10001 --gid columba --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin columba \
 && install -d -o columba -g columba -m 0750 /var/lib/columba
COPY --from=build /opt/columba /opt/columba
COPY --from=build /srv/columba /srv/columba
WORKDIR /srv/columba
USER 10001:10001
# API; SMTP inbound (bounces), submission STARTTLS and TLS; metrics of worker, inbound, smtp.
# Unprivileged ports inside: compose publishes 25, 587 and 465 outside.
EXPOSE 8000 2525 2587 2465 9124 9125 9126
CMD ["columba", "--help"]
