"""Certificates and TLS settings for HTTPS inspection: the user's local certificate authority
on disk, the leaves it signs per host, the server-side contexts that present them to a client,
and the trust the proxy's own TLS to sites is verified against.

Imports only wire/ of ours (no logging, no asyncio): the CA key never leaves this layer except
into an SSL context, and certs.py is the one module that imports `cryptography`.
"""
