"""Clients that put events on the topics: the kiosk CLI, the worker simulator, the load
generator and the demo."""
