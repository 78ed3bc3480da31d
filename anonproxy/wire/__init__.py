"""Bytes on the wire, parsed and rendered (pure): HTTP/1 heads and bodies (llhttp), SOCKS5
handshakes for clients and hops, header sanitizing, addresses, and the error vocabulary.
Nothing here does I/O or imports asyncio.
"""
