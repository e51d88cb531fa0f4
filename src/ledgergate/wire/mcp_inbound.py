"""The MCP SDK's inbound-request validation (`mcp.shared.inbound`), without the rest of the SDK.

The gateway checks a 2026-07-28 request with the SDK's own rules (routing headers against the body,
the `_meta` envelope). That module needs only `mcp_types`, but an ordinary import runs
`mcp/__init__.py`, which loads the whole client and server SDK (about 23 MB resident, most of a
second at start-up) in a process that uses none of it; see `ledgergate.submodule`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledgergate.submodule import load_submodule

if TYPE_CHECKING:
    from mcp.shared.inbound import (
        ERROR_CODE_HTTP_STATUS,
        InboundLadderRejection,
        classify_inbound_request,
        encode_header_value,
    )
else:
    _inbound = load_submodule("mcp.shared.inbound")
    ERROR_CODE_HTTP_STATUS = _inbound.ERROR_CODE_HTTP_STATUS
    InboundLadderRejection = _inbound.InboundLadderRejection
    classify_inbound_request = _inbound.classify_inbound_request
    encode_header_value = _inbound.encode_header_value

__all__ = ["ERROR_CODE_HTTP_STATUS", "InboundLadderRejection", "classify_inbound_request", "encode_header_value"]
