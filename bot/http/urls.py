"""Outbound requests the API makes for its callers: images given as URLs, and webhooks.

Names and URLs from outside are never trusted: only http(s), and by default never an address
that is loopback, private, link-local or otherwise not global (so a caller cannot make the
server reach into its own network). Hosts are checked after DNS resolution, by the resolver the
session connects with, so a name that resolves to 127.0.0.1 is refused too; redirects are not
followed. `http.allow_private_urls` lifts the address check (for a trusted network).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from bot.engine import ImageInput
from bot.errors import InvalidValue
from bot.media import sniff

log = logging.getLogger(__name__)


class PrivateAddress(OSError):
    """A host that is, or resolves to, an address that is not public."""


def _public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class GuardedResolver(AbstractResolver):
    """Resolves names, refusing any that leads to a non-public address (unless allowed)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self.allow_private and any(not _public(r["host"]) for r in results):
            raise PrivateAddress(f"{host} is not a public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(allow_private: bool, timeout: float) -> aiohttp.ClientSession:
    """A client session whose connections only reach public addresses (unless allowed)."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private), limit=32)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
    )


def check_url(url: str, field: str, *, allow_private: bool) -> URL:
    """An http(s) URL whose host, if an address, is public (unless allowed).

    Raises:
        InvalidValue: another scheme, no host, or a non-public address (names `field`).
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise InvalidValue(field, "is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidValue(field, "must be an http:// or https:// URL")
    if parsed.user or parsed.password:
        raise InvalidValue(field, "must not carry a user name or password")
    host = parsed.host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if literal and not allow_private and not _public(host):
        raise InvalidValue(field, "must not point to a private or loopback address")
    if not literal and not allow_private and host.rstrip(".").lower() == "localhost":
        raise InvalidValue(field, "must not point to a private or loopback address")
    return parsed


async def check_host(session: aiohttp.ClientSession, url: URL, field: str) -> None:
    """Resolve the URL's host now, so that a webhook to a private address is refused at once.

    Raises:
        InvalidValue: the host does not resolve, or only to non-public addresses.
    """
    connector = session.connector
    resolver = getattr(connector, "_resolver", None)
    if not isinstance(resolver, GuardedResolver) or url.host is None:
        return
    try:
        ipaddress.ip_address(url.host.strip("[]").split("%", 1)[0])
        return  # an address: check_url looked at it
    except ValueError:
        pass
    try:
        await resolver.resolve(url.host, url.port or 0, socket.AF_UNSPEC)
    except PrivateAddress:
        raise InvalidValue(field, "must not point to a private or loopback address") from None
    except OSError:
        raise InvalidValue(field, f"the host {url.host} could not be found") from None


async def fetch_image(
    session: aiohttp.ClientSession, url: str, field: str, *, max_bytes: int, allow_private: bool
) -> ImageInput:
    """Download an image given as a URL.

    Raises:
        InvalidValue: a refused URL, an unreachable host, an HTTP error, too large, not an image.
    """
    parsed = check_url(url, field, allow_private=allow_private)
    try:
        async with session.get(parsed, allow_redirects=False) as response:
            if response.status != 200:
                raise InvalidValue(field, f"fetching the image answered HTTP {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise InvalidValue(field, f"the image is too large ({max_bytes} bytes at most)")
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > max_bytes:
                    raise InvalidValue(field, f"the image is too large ({max_bytes} bytes at most)")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, PrivateAddress):
            raise InvalidValue(field, "must not point to a private or loopback address") from None
        raise InvalidValue(field, f"could not reach {parsed.host}") from None
    except (aiohttp.ClientError, TimeoutError):
        raise InvalidValue(field, f"could not fetch the image from {parsed.host}") from None
    name = parsed.name or "image"
    return ImageInput(name if "." in name else name + ".png", bytes(data))


def decode_image(text: str, field: str, *, max_bytes: int, urls: bool = True) -> ImageInput:
    """An image given inline: a `data:image/...;base64,` URL or bare base64.

    Raises:
        InvalidValue: not base64, or too large.
    """
    payload = text
    if text.startswith("data:"):
        head, sep, payload = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InvalidValue(field, "a data: URL must be base64 (data:image/png;base64,...)")
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise InvalidValue(field, f"the image is too large ({max_bytes} bytes at most)")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        ways = "base64, a data: URL or an http(s) URL" if urls else "base64 or a data: URL"
        raise InvalidValue(field, f"must be an image as {ways}") from None
    return ImageInput(f"file.{sniff(data).ext}", data)
