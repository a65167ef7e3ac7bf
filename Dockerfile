# The Corral server. Build: `docker build -t corral .`; run it with PostgreSQL: `docker compose up` (compose.yaml).
FROM debian:bookworm-slim

# What scripts/setup installs on a Debian host: the sandbox (bubblewrap, and libseccomp2 for its seccomp filter),
# grep (ripgrep), the egress proxy's sandbox end (socat), workspace images (e2fsprogs), environments' pip
# packages (python3-pip).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip bubblewrap libseccomp2 ripgrep socat e2fsprogs ca-certificates git procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin corral-sandbox

WORKDIR /opt/corral
COPY pyproject.toml README.md ./
COPY corral ./corral
RUN python3 -m venv /opt/corral/venv \
 && /opt/corral/venv/bin/pip install --no-cache-dir . \
 && ln -s /opt/corral/venv/bin/corral /usr/local/bin/corral

# Every setting of `corral serve --help` can be given as its CORRAL_* variable.
ENV CORRAL_HOST=0.0.0.0 \
    CORRAL_PORT=8400 \
    CORRAL_DATA_DIR=/var/lib/corral \
    CORRAL_LOG_FORMAT=json
VOLUME /var/lib/corral
EXPOSE 8400
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8400/health', timeout=2)"

ENTRYPOINT ["corral"]
CMD ["serve"]
