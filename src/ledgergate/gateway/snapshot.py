"""One config snapshot: everything a reload replaces, compiled and validated together.

A reload builds a whole new snapshot (and from it a new pipeline) before it
swaps anything, so an invalid config never half-applies, and a request that
started under one snapshot finishes under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgergate.approvals.model import policy_version
from ledgergate.config import Settings
from ledgergate.identity.service import IdentityService
from ledgergate.masking.engine import Masker
from ledgergate.policy.budgets import Budgets
from ledgergate.policy.engine import PolicyEngine


@dataclass(frozen=True)
class Snapshot:
    settings: Settings
    masker: Masker
    policy: PolicyEngine
    budgets: Budgets
    identity: IdentityService
    #: names the policy an approval was granted under: a changed policy needs new approvals
    policy_version: str

    @classmethod
    def build(cls, settings: Settings, identity: IdentityService) -> Snapshot:
        """Validate and compile everything; raises (ValueError/ConfigError) without touching the running one."""
        masker = Masker.from_settings(settings.masking)
        policy = PolicyEngine.from_settings(settings.policies, set(masker.profiles))
        return cls(settings, masker, policy, Budgets.from_settings(settings.budgets), identity,
                   policy_version(settings.policies))
