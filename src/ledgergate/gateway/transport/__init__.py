"""The client-facing MCP transport, split by what it speaks: `modern` (2026-07-28, stateless),
`handshake` (2024-11-05 … 2025-11-25: sessions, GET stream, DELETE, resumption), `legacy_sse`
(HTTP+SSE), `hosts` (Host/Origin), around the small `core` and the routing `endpoint`."""
