# One image for every statnet service; docker-compose.yml picks the service by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
RUN pip install --no-cache-dir . && useradd --system --uid 10001 statnet
USER statnet

# all six services in one process; compose runs one per container instead
CMD ["statnet", "run"]
