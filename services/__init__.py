"""statnet's services: gateway (HTTP edge), registry, submission, validation, aggregation, notify."""
