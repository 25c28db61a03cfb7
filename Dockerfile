# The wal-archiver image: one image for every role (scheduler, worker, producer, admin
# commands). The role is the argument, e.g. `docker run wal-archiver:0.1.0 scheduler`.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so that volumes and host directories can be prepared for it.
RUN groupadd --system --gid 10001 archiver \
    && useradd --system --uid 10001 --gid archiver --home-dir /home/archiver --create-home \
       --shell /usr/sbin/nologin archiver

WORKDIR /src
COPY pyproject.toml README.md ./
COPY archiver ./archiver
COPY workers ./workers
RUN pip install . \
    && rm -rf /src

# The default WAL root of the compose stack. A named volume mounted here starts out with this
# directory's owner, so the non-root user can write to it.
RUN mkdir /wal && chown archiver:archiver /wal

USER archiver
WORKDIR /home/archiver
# Scheduler metrics, worker host metrics.
EXPOSE 9808 9809
ENTRYPOINT ["archiver"]
CMD ["--help"]
