"""ledgergate: an identity-aware, policy-checked, tamper-evident gateway for MCP servers."""

__version__ = "0.1.0"
