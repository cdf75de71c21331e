# runner:local — the `runner` command in a container, for the `runner` service of
# docker-compose.yml. It drives the host's Docker engine through the mounted socket
# (/var/run/docker.sock), so the task containers are siblings of this one, not children.
#
#   docker build -t runner:local .
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock runner:local --help
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="runner" \
      org.opencontainers.image.description="runner: a Docker-native container task runner (YAML flows, one container per task)"

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/runner/bin:$PATH
RUN python3 -m venv /opt/runner

# pip's own settings, for a private index or a TLS-inspecting proxy, e.g.
#   docker build --build-arg PIP_INDEX_URL=https://pypi.example.com/simple .
#   docker build --build-arg PIP_TRUSTED_HOST="pypi.org files.pythonhosted.org" .
# Unset by default. Build args show in `docker history`: no passwords in PIP_INDEX_URL.
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST

# The dependencies first, read from pyproject.toml, so editing the code does not
# download them again: this layer changes only when pyproject.toml does.
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY README.md /src/
COPY runner /src/runner
RUN pip install --no-deps /src \
 && rm -rf /src \
 && runner --help > /dev/null

WORKDIR /flows
ENTRYPOINT ["runner"]
CMD ["--help"]
