# `vitsearch serve` in a container: CPU torch, the bundled model, a non-root user.
#   docker build -t vitsearch .
#   docker compose up -d        # Milvus standalone and vitsearch together (docker-compose.yml)
# See docs/deploy.md for keys, CORS, metrics, logs and shutdown.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU build of torch first, from PyTorch's CPU index: a bare `torch` from PyPI pulls the CUDA build.
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# vitsearch itself; the bundled model ships inside the package (vitsearch/models/), so nothing is
# downloaded when the container starts.
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY vitsearch ./vitsearch
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group vitsearch \
    && mkdir -p /data \
    && chown vitsearch:vitsearch /data
USER vitsearch
WORKDIR /home/vitsearch

# Uploads, thumbnails and any Milvus Lite file live under /data (a volume); the store is the compose
# file's Milvus service unless VITSEARCH_URI says otherwise.
ENV VITSEARCH_URI=http://milvus:19530 \
    XDG_DATA_HOME=/data \
    XDG_CACHE_HOME=/data/cache \
    HF_HUB_OFFLINE=1
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5)"]

# SIGTERM (docker stop) is a graceful shutdown: requests in flight finish (up to --shutdown-timeout,
# 30 s), the store is flushed, exit 0. Give `docker stop` more than that: `--time 45`.
STOPSIGNAL SIGTERM
CMD ["vitsearch", "serve", "--host", "0.0.0.0", "--port", "8000", "--upload-dir", "/data/uploads", "--thumbnail-dir", "/data/thumbnails"]
