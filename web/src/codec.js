// The session protocol's codec for the browser (docs/protocol/session.md), sans-I/O as the Python
// one is: frames are plain objects tagged by `t`, one MessagePack map per WebSocket message.
//
// Client frames are encoded with their fields in the order and with the defaults of the Python
// Structs (src/dmds/protocols/session/frames.py), defaults left out, so that both codecs write the
// same bytes for the same frame: tests/web/test_codec.py checks it against the Python codec's
// fixtures. Numbers whose value is whole are written as integers, which the server's decoder
// accepts for its float fields.
import { decode, encode } from "@msgpack/msgpack";

// Version 2: the server may push several messages in one `messages` frame. Receipt ranges
// (`delivered.first`) come only to a client that asks for them; this one does not.
export const VERSION = 2;

// Error codes (src/dmds/protocols/session/codes.py).
export const ERROR = {
  BAD_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  UNSUPPORTED_VERSION: 3,
  NOT_LOGGED_IN: 4,
  BAD_CREDENTIALS: 5,
  RATE_LIMITED: 6,
  BAD_TOKEN: 7,
  ALIAS_TAKEN: 8,
  UNKNOWN_USER: 9,
  INVALID_FIELD: 10,
  LIMIT_EXCEEDED: 11,
  ALREADY_LOGGED_IN: 12,
  UNKNOWN_ATTACHMENT: 13,
  INTERNAL: 14,
  IDLE_TIMEOUT: 15,
  TOO_SLOW: 16,
  BLOCKED: 17,
  KICKED: 18,
};

// Client frames: each field with its default (undefined: required).
const CLIENT = {
  hello: [["version"], ["client", ""], ["features", []]],
  ping: [["n", 0]],
  pong: [["n", 0]],
  register: [["id"], ["alias"], ["full_name"], ["birth_date"], ["password"]],
  login: [["id"], ["alias", "-"], ["password", ""], ["token", ""]],
  logout: [["id"]],
  change_password: [["id"], ["old_password"], ["new_password"]],
  delete_account: [["id"], ["password"]],
  send: [["id"], ["to"], ["key"], ["text"], ["attachment", 0]],
  ack: [["message_ids"]],
  mark_read: [["message_ids"]],
  typing: [["to"]],
  subscribe: [["id"]],
  history: [["id"], ["peer"], ["before", 0], ["limit", 50]],
  upload_start: [["id"], ["name"], ["media_type"], ["size"]],
  upload_chunk: [["id"], ["upload"], ["offset"], ["data"]],
  fetch: [["id"], ["attachment"], ["offset", 0], ["length", 262144]],
};

export const CLIENT_FRAMES = Object.keys(CLIENT);

// Server frames' fields that the server leaves out when they hold their default.
const SERVER_DEFAULTS = {
  ping: { n: 0 },
  pong: { n: 0 },
  error: { message: "", re: 0, retry_after_s: 0 },
  message: { attachment: null },
  delivered: { key: "", first: 0 },
  read: { key: "" },
  upload_ready: { attachment: 0 },
  goaway: { reason: "" },
};
const ENTRY_DEFAULTS = { delivered_at: 0, read_at: 0, attachment: null };

export class CodecError extends Error {}

/** A client frame (`{t: "send", id, to, key, text}`) as the bytes of one WebSocket message. */
export function encodeFrame(frame) {
  const fields = CLIENT[frame.t];
  if (fields === undefined) throw new CodecError(`not a client frame: ${frame.t}`);
  const out = { t: frame.t };
  for (const [name, fallback] of fields) {
    const value = frame[name];
    if (value === undefined) {
      if (fallback === undefined) throw new CodecError(`${frame.t}: ${name} is required`);
      continue;
    }
    if (value === fallback || (Array.isArray(fallback) && Array.isArray(value) && !value.length)) continue;
    out[name] = value;
  }
  return encode(out);
}

/** One WebSocket message from the server as a frame object; CodecError if it is not one. */
export function decodeFrame(bytes) {
  let frame;
  try {
    frame = decode(bytes, { useBigInt64: false });
  } catch (error) {
    throw new CodecError(`not MessagePack: ${error.message}`);
  }
  if (frame === null || typeof frame !== "object" || Array.isArray(frame) || typeof frame.t !== "string") {
    throw new CodecError("not a frame: a map with a string `t` is expected");
  }
  if (frame.t === "history_page" && Array.isArray(frame.entries)) {
    frame.entries = frame.entries.map((entry) => ({ ...ENTRY_DEFAULTS, ...entry }));
  }
  if (frame.t === "messages" && Array.isArray(frame.messages)) {
    frame.messages = frame.messages.map((message) => ({ ...SERVER_DEFAULTS.message, ...message }));
  }
  return { ...SERVER_DEFAULTS[frame.t], ...frame };
}
