// What the page knows of each conversation: its messages by a stable id (`in:ID` received,
// `out:ID` sent and accepted, `key:KEY` sent and not yet accepted), in time order, and unread counts.

class Conversation {
  constructor(peer) {
    this.peer = peer;
    this.byId = new Map();
    this.unread = 0;
    this.started = false;
    this.loading = false;
    this.complete = false;
  }

  add(message) {
    const known = this.byId.get(message.id);
    this.byId.set(message.id, known ? { ...message, ...known, state: better(known.state, message.state) } : message);
  }

  accepted(key, messageId) {
    const item = this.byId.get(`key:${key}`);
    if (!item) return;
    this.byId.delete(`key:${key}`);
    const id = `out:${messageId}`;
    const known = this.byId.get(id);
    this.byId.set(id, { ...item, id, message_id: messageId, state: better(known?.state, "sent") });
  }

  failed(key, error) {
    const item = this.byId.get(`key:${key}`);
    if (item) this.byId.set(item.id, { ...item, state: "failed", error });
  }

  mark(messageId, state) {
    const item = this.byId.get(`out:${messageId}`);
    if (item) this.byId.set(item.id, { ...item, state: better(item.state, state) });
  }

  messages() {
    return [...this.byId.values()].sort((a, b) => a.at - b.at);
  }

  last() {
    const all = this.messages();
    return all[all.length - 1];
  }

  /** Sent-at of the oldest message loaded: where the next History page starts (0: the newest). */
  oldest() {
    let oldest = 0;
    for (const m of this.byId.values()) if (m.message_id && (!oldest || m.at < oldest)) oldest = m.at;
    return oldest;
  }

  unreadIds() {
    return this.unread ? this.messages().filter((m) => !m.mine).slice(-this.unread).map((m) => m.message_id) : [];
  }
}

const ORDER = ["failed", "queued", "sent", "delivered", "read"];
const better = (a, b) => (ORDER.indexOf(a) >= ORDER.indexOf(b) ? a : b);

export class Conversations {
  constructor() {
    this.all = new Map();
  }

  clear() {
    this.all.clear();
  }

  get(peer) {
    let chat = this.all.get(peer);
    if (!chat) {
      chat = new Conversation(peer);
      this.all.set(peer, chat);
    }
    return chat;
  }

  sorted() {
    return [...this.all.values()].sort((a, b) => (b.last()?.at || 0) - (a.last()?.at || 0));
  }

  totalUnread() {
    let total = 0;
    for (const chat of this.all.values()) total += chat.unread;
    return total;
  }
}
