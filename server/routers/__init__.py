"""The app's routes, one module per thing served; `server.app` mounts them (the `/v1` prefix
and the token check are set there, for the routers that need them)."""
