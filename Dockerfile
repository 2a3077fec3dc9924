# One image for everything driftloop runs in a cluster: KFP pipeline steps, the
# KServe predictor, the payload collector and the drift job. Each workload picks
# its entrypoint (see manifests/ and pipelines/training_pipeline.yaml).
#
#   docker build -t ghcr.io/driftloop/driftloop:0.1.0 .
#
# The tag is the package version (driftloop/image.py); tests/manifests checks
# that this file, the manifests and the compiled pipeline agree.
FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="driftloop" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/driftloop/driftloop" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The root filesystem is read-only in the cluster; /tmp is an emptyDir, so
    # caches that live under $HOME (matplotlib, torch) land somewhere writable.
    HOME=/tmp

# A fixed numeric user: manifests set runAsUser 10001 and runAsNonRoot.
RUN groupadd --system --gid 10001 driftloop \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin driftloop

WORKDIR /app

# The dependencies before the sources, so this layer is rebuilt only when the lock changes.
# The lock's pip first (an older pip refuses the lock's extras in --require-hashes mode).
# Then torch, the CPU build from the CPU index at the lock's exact version, without its
# dependencies (the lock brings those, hash-checked). The lock's torch hash is that of the
# same-named wheel the lock was resolved from; its hash on download.pytorch.org could not
# be checked from the machine that wrote the lock (that host is unreachable there), so this
# step is pinned by version only, and the lock install below finds torch already installed.
# Last, the no-deps lock: recbole, for the MovieLens-100K files it ships (its own pins would
# fight ours; none of its code runs).
COPY requirements.lock requirements-nodeps.lock ./
RUN pip install --no-cache-dir pip==26.3 \
    && pip install --no-cache-dir --no-deps --index-url https://download.pytorch.org/whl/cpu \
        torch==2.13.0+cpu \
    && pip install --no-cache-dir --require-hashes -r requirements.lock \
    && pip install --no-cache-dir --no-deps --require-hashes -r requirements-nodeps.lock

# .dockerignore admits only the package sources, pyproject, README, the lock and data/.
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

USER 10001:10001
EXPOSE 8080
CMD ["driftloop", "--help"]
