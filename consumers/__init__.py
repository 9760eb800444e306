"""Kafka consumers: thin shells that validate, translate, call the core and publish."""
