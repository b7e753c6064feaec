"""Serving without a transport: the model repository (which versions are loaded, their state, swaps), the
endpoints' release state and the choice of version per request. The HTTP apps (ASGI, RSGI), the Ray Serve replica
and any later transport are thin adapters over it: they parse, call it, and serialise."""
