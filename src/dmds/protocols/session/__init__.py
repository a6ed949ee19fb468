"""The session protocol (docs/protocol/session.md): one persistent connection, msgpack frames. Sans-I/O."""
