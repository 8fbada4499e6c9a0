"""marshmallow schemas, declared once: metadata states, event payloads, API bodies."""
