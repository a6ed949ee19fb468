"""The WAL's fsync helper, run as a script: `python -I -S fsyncer.py FD PATH` (see walsync.py).

It reads requests from the socket FD, one byte per commit written, fdatasyncs PATH once for all the
requests it read together and answers each with a byte: OK, or FAILED if the fdatasync raised. It
sends READY first, and exits when the socket closes (the server stopped or died). Only the standard
library, and no package import, so that it starts quickly.
"""

import contextlib
import os
import signal
import socket
import sys

READY = b"r"
OK = b"k"
FAILED = b"e"
#: requests read at once at most (more wait in the socket for the next fdatasync)
READ_BYTES = 65536


def serve(fd: int, path: str) -> None:
    sock = socket.socket(fileno=fd)
    sock.sendall(READY)
    while requests := sock.recv(READ_BYTES):
        try:
            wal = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(wal)
            finally:
                os.close(wal)
        except OSError as exc:
            print(f"dmds fsyncer: fdatasync {path}: {exc}", file=sys.stderr, flush=True)
            answer = FAILED
        else:
            answer = OK
        sock.sendall(answer * len(requests))


if __name__ == "__main__":
    # Ctrl-C or a stop signal to the whole process group reaches the server, whose graceful stop
    # still needs its last commits synced: the helper ends when the server closes the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server went first
        serve(int(sys.argv[1]), sys.argv[2])
