"""Policies the shared integration gateway runs with."""

POLICIES = [
    {"name": "staff-all", "match": {"groups": ["staff"]}, "effect": "allow", "mask": None},
    {"name": "staff-server-requests", "match": {"groups": ["staff"],
                                                "methods": ["sampling/createMessage", "elicitation/create",
                                                            "roots/list"]}, "effect": "allow"},
    # readers may use everything, but no rule lets a server ask them anything (sampling, elicitation, roots)
    {"name": "readers-all", "match": {"groups": ["readers"]}, "effect": "allow"},
]

