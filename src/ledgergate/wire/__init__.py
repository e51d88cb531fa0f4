"""Codecs of the wire (JSON-RPC envelopes, SSE framing) that the gateway and the upstream connectors share.

Nothing here imports anything above it."""
