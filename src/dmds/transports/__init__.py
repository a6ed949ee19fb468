"""Transports: thin asyncio code binding the sans-I/O codecs to the core. The only code with sockets."""
