# Turnout as a small, non-root container: `docker build -t turnout .`
# Run: docker run -p 4000:4000 -v $PWD/router.toml:/etc/turnout/router.toml:ro turnout
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY cache ./cache
RUN python -m venv /opt/turnout \
 && /opt/turnout/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && find /opt/turnout -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin turnout
COPY --from=build /opt/turnout /opt/turnout
COPY router.toml /etc/turnout/router.toml
ENV PATH=/opt/turnout/bin:$PATH \
    TURNOUT_CONFIG=/etc/turnout/router.toml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 4000
# The slim image has no curl: the check is a few lines of the Python already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4000/health/liveness', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["turnout"]
CMD ["serve", "--host", "0.0.0.0", "--port", "4000"]
