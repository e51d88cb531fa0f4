"""The web console at /ui/: approvals inbox, sessions and replay, ledger, admin (server-rendered)."""
