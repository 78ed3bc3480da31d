"""Clients coming in: the listener (protocol sniffing, allow-list, accounting), one HTTP
session and one SOCKS5 session per connection, and the PAC file.
"""
