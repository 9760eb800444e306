"""Adapters and plumbing: settings, the embedded stack, Kafka, Redis and PostgreSQL."""
