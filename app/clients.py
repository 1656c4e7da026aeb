"""Who is asking: the peer's address, or behind a trusted balancer, the one it forwarded.

X-Forwarded-For is written by whoever sends it, so it is read only when the peer is a proxy named
in TRUSTED_PROXIES; then the rightmost address that is not itself a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from app.keys import CLIENT_ADDRESS
from app.settings import Network, parse_networks


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]
) -> str:
    if peer is None:
        return "unknown"
    if not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed([peer, *hops]):
        if not _is_trusted(hop, trusted):
            return hop if _is_address(hop) else peer
    return peer  # every hop is a proxy of ours: the request came from inside


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(text: str, trusted: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def client_address_middleware(trusted_proxies: str) -> Middleware:
    trusted = parse_networks(trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        request[CLIENT_ADDRESS] = client_address(request.remote, forwarded, trusted)
        return await handler(request)

    return middleware
