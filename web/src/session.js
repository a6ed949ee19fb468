// The session protocol over the page's WebSocket: Hello, Login (password or token), requests with
// ids and answers by `re`, pushes to the page, reconnection with backoff, and an outbox of sends that
// survives reloads and goes out again with the same key (the server stores a key once).
import { ERROR, VERSION, decodeFrame, encodeFrame } from "./codec.js";

const OUTBOX = "dmds.outbox";
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
// Answers after which a send is tried again (with the same key) rather than given up.
const RETRY = new Set([ERROR.INTERNAL, ERROR.RATE_LIMITED, ERROR.NOT_LOGGED_IN]);
// Connection-closing errors after which the page does not reconnect by itself.
const FINAL = new Set([ERROR.BLOCKED, ERROR.KICKED]);

export class RequestError extends Error {
  constructor(frame) {
    super(frame.message || `error ${frame.code}`);
    this.code = frame.code;
    this.retryAfterS = frame.retry_after_s;
  }
}

export class Session extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.waiting = new Map(); // request id -> {resolve, reject}
    this.credentials = null; // {alias, token}
    this.online = false;
    this.attempt = 0;
    this.welcome = null;
    this.outbox = JSON.parse(localStorage.getItem(OUTBOX) || "[]");
    this.timer = null;
    this.stopped = false;
    this.lastHeard = 0;
    this.goingAway = false; // the server said GoAway: reconnect at once
    this.final = null; // the error frame that ended the session for good (BLOCKED, KICKED)
    this.watchdog = setInterval(() => this.check(), 1000);
    // The browser knows before the socket does: an open WebSocket can outlive the network.
    this.onOffline = () => this.ws?.close();
    this.onOnline = () => {
      if (!this.online && this.credentials && !this.stopped) {
        this.attempt = 0;
        clearTimeout(this.timer);
        this.reconnect();
      }
    };
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
  }

  /** No frame for two heartbeats (the server pings when it has nothing to say): the link is dead. */
  check() {
    const heartbeat = this.welcome?.heartbeat_s;
    if (this.online && heartbeat && Date.now() - this.lastHeard > (2 * heartbeat + 5) * 1000) this.ws?.close();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Open the socket and say Hello; resolves with Welcome. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let welcomed = false;
      ws.onopen = () => ws.send(encodeFrame({ t: "hello", version: VERSION, client: "dmds web", features: ["typing", "goaway"] }));
      ws.onmessage = (event) => {
        this.lastHeard = Date.now();
        let frame;
        try {
          frame = decodeFrame(new Uint8Array(event.data));
        } catch (error) {
          console.warn("dmds: dropped a frame that is not one", error);
          return;
        }
        if (!welcomed && frame.t === "welcome") {
          welcomed = true;
          this.welcome = frame;
          resolve(frame);
          return;
        }
        this.received(frame);
      };
      ws.onclose = () => {
        if (!welcomed) reject(new Error("the server is unreachable"));
        this.lost(ws);
      };
    });
  }

  request(frame) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.write({ ...frame, id });
    });
  }

  write(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeFrame(frame));
  }

  received(frame) {
    if (frame.t === "ping") {
      this.write({ t: "pong", n: frame.n });
      return;
    }
    const waiter = frame.re ? this.waiting.get(frame.re) : undefined;
    if (waiter) {
      this.waiting.delete(frame.re);
      if (frame.t === "error") waiter.reject(new RequestError(frame));
      else waiter.resolve(frame);
      return;
    }
    if (frame.t === "error" && !frame.re) {
      // Blocked or disconnected by an operator: coming back at once would undo it.
      if (FINAL.has(frame.code)) this.final = frame;
      this.emit("closing", frame);
      return;
    }
    if (frame.t === "goaway") {
      // The server is stopping: leave now and come back at once (the outbox sends again what was
      // not answered, with its keys).
      this.goingAway = true;
      this.ws?.close();
      return;
    }
    if (frame.t === "messages") {
      for (const message of frame.messages) this.emit("message", message); // each as if pushed alone
      return;
    }
    this.emit(frame.t, frame);
  }

  async register(fields) {
    await this.request({ t: "register", ...fields });
  }

  /** Log in with a password, or with the token of an earlier login (`password` undefined). */
  async login(alias, password, token) {
    const frame = password !== undefined ? { t: "login", alias, password } : { t: "login", token };
    const answer = await this.request(frame);
    this.credentials = { alias: answer.alias, token: answer.token };
    this.online = true;
    this.attempt = 0;
    this.emit("online", answer);
    this.flush();
    return answer;
  }

  /** Upload a File or Blob in chunks; resolves with the Attachment to name in `send`. */
  async upload(file, onProgress = () => {}) {
    const mediaType = file.type || "application/octet-stream";
    let ready = await this.request({ t: "upload_start", name: file.name, media_type: mediaType, size: file.size });
    // A chunk and its frame's fields must fit in one frame.
    const chunk = Math.max(1024, Math.min(256 * 1024, (this.welcome?.max_frame_bytes || 65536) - 1024));
    while (!ready.attachment) {
      const data = new Uint8Array(await file.slice(ready.offset, ready.offset + chunk).arrayBuffer());
      ready = await this.request({ t: "upload_chunk", upload: ready.upload, offset: ready.offset, data });
      onProgress(ready.offset / file.size);
    }
    return { attachment_id: ready.attachment, name: file.name, media_type: mediaType, size: file.size };
  }

  /** The bytes of an attachment, fetched in chunks, as a Blob of its type. */
  async download(attachment) {
    const parts = [];
    let offset = 0;
    do {
      const chunk = await this.request({ t: "fetch", attachment: attachment.attachment_id, offset });
      parts.push(chunk.data);
      offset += chunk.data.length;
      if (!chunk.data.length) break;
    } while (offset < attachment.size);
    return new Blob(parts, { type: attachment.media_type });
  }

  /** Queue a message: kept in localStorage until the server has accepted it. */
  send(to, text, attachment = null) {
    const item = { to, text, attachment, key: crypto.randomUUID(), queued_at: Date.now() / 1000 };
    this.outbox.push(item);
    this.saveOutbox();
    this.emit("queued", item);
    if (this.online) this.sendItem(item);
    return item;
  }

  async sendItem(item) {
    try {
      const frame = { t: "send", to: item.to, key: item.key, text: item.text };
      if (item.attachment) frame.attachment = item.attachment.attachment_id;
      const accepted = await this.request(frame);
      this.outbox = this.outbox.filter((x) => x.key !== item.key);
      this.saveOutbox();
      this.emit("accepted", { ...item, message_id: accepted.message_id });
    } catch (error) {
      if (error instanceof RequestError && !RETRY.has(error.code)) {
        // refused for good (unknown user, too long...): it stays out of the outbox
        this.outbox = this.outbox.filter((x) => x.key !== item.key);
        this.saveOutbox();
        this.emit("refused", { ...item, error });
      } else if (error instanceof RequestError && this.online) {
        const delay = Math.max(1000, error.retryAfterS * 1000);
        setTimeout(() => this.online && this.sendItem(item), delay);
      } // else the connection went: sent again with the same key once logged in again
    }
  }

  flush() {
    for (const item of this.outbox) this.sendItem(item);
  }

  saveOutbox() {
    localStorage.setItem(OUTBOX, JSON.stringify(this.outbox));
  }

  lost(ws) {
    if (ws !== this.ws) return;
    const wasOnline = this.online;
    this.online = false;
    for (const { reject } of this.waiting.values()) reject(new Error("connection lost"));
    this.waiting.clear();
    if (this.final) {
      const frame = this.final;
      this.final = null;
      this.credentials = null;
      this.emit("expired", new RequestError(frame));
      return;
    }
    if (wasOnline) this.emit("offline");
    if (this.credentials && !this.stopped) {
      if (this.goingAway) this.attempt = 0; // the first try at once: another node is likely up
      this.reconnectLater(this.goingAway);
    }
    this.goingAway = false;
  }

  reconnectLater(now = false) {
    clearTimeout(this.timer);
    const delay = now ? 0 : BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.timer = setTimeout(() => this.reconnect(), delay * (0.75 + Math.random() / 2));
  }

  async reconnect() {
    try {
      await this.open();
      await this.login(undefined, undefined, this.credentials.token);
    } catch (error) {
      if (error instanceof RequestError) {
        this.credentials = null;
        this.emit("expired", error);
        return;
      }
      if (this.ws) this.ws.close();
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    if (this.ws) this.ws.close();
  }
}
