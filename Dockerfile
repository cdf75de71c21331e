# runner:local — the `runner` command in a container: the `runner` service of
# docker-compose.yml, a CI job's image (docs/ci/), or a one-off run. It drives a Docker
# engine through the mounted socket (task containers are siblings of this one) or through
# DOCKER_HOST (a dind service, with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH).
#
#   DOCKER_BUILDKIT=0 docker build -t runner:local .
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD/flows:/flows" \
#     runner:local run hello.yml
#
# Two stages: the first installs the package into a venv with pip, the second copies only
# the venv onto Debian's python3, without pip, setuptools, compilers or apt lists.
# It starts as root and its entrypoint (container/runner-entrypoint.sh) switches to a
# non-root user that may use the socket (its group added) and write the working folder.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/runner

# pip's own settings, for a private index or a TLS-inspecting proxy, e.g.
#   docker build --build-arg PIP_INDEX_URL=https://pypi.example.com/simple .
#   docker build --build-arg PIP_TRUSTED_HOST="pypi.org files.pythonhosted.org" .
# Unset by default. Build args show in `docker history` of the build stage only, which is
# not part of the image; still: no passwords in PIP_INDEX_URL.
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST

# The dependencies first, read from pyproject.toml, so editing the code does not
# download them again: this layer changes only when pyproject.toml does.
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/runner/bin/pip install -r /tmp/requirements.txt

COPY README.md /src/
COPY runner /src/runner
RUN /opt/runner/bin/pip install --no-deps /src \
 && /opt/runner/bin/pip uninstall -y -q pip setuptools \
 && /opt/runner/bin/runner --help > /dev/null

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="runner" \
      org.opencontainers.image.description="runner: a Docker-native container task runner (YAML flows, one container per task)"
# python3 only: the venv's interpreter is this one (/usr/bin/python3). util-linux's
# setpriv, which the entrypoint uses to drop root, is in the base image.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/dpkg.log /var/log/apt \
 && groupadd --gid 10001 runner \
 && useradd --uid 10001 --gid 10001 --home-dir /home/runner --create-home \
      --shell /usr/sbin/nologin runner
COPY --from=build /opt/runner /opt/runner
COPY container/runner-entrypoint.sh /usr/local/bin/runner-entrypoint
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/runner/bin:$PATH
WORKDIR /flows
# Healthy when the engine answers (through the socket or DOCKER_HOST), without waiting.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
  CMD ["python3", "-m", "runner.backends.docker"]
ENTRYPOINT ["runner-entrypoint"]
CMD ["--help"]
