# One image for every statnet service; docker-compose.yml picks the service by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
RUN pip install --no-cache-dir . && useradd --system --uid 10001 statnet \
    && install -d -o statnet -g statnet /var/lib/statnet
USER statnet
# the working directory is the service's own (a volume in compose): what an operator writes
# there (statnet dlq drop --to dropped.jsonl) was refused in root's /app
WORKDIR /var/lib/statnet

# all six services in one process; compose runs one per container instead
CMD ["statnet", "run"]
