"""REST API routes under /api/v1 (each module exposes a `*_routes(...)` factory)."""
