"""Wire protocols, sans-I/O: bytes in, typed events out, and back. No sockets, no clock, no logging."""
