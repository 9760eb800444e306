"""Wire formats: versioned pydantic models for every message, topic names and keys."""
