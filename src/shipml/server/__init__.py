"""The inference server: ASGI app, routes, auth, limits, metrics, graceful shutdown."""
