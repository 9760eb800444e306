"""The push gateway and HTTP API: workers' sockets, kiosks' requests, pages and API documents."""
