"""Code shared by every statnet service: config, database, events, schemas, metrics."""
