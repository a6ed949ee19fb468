// The page: accounts, the conversation list, presence, a conversation with its history, marks and
// drafts. Everything a user or a server sent is put in the page as text (textContent), never as HTML.
import { Session } from "./session.js";
import { Conversations } from "./conversations.js";

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/session`;
const TOKEN = "dmds.token";
const DRAFT = "dmds.draft.";

let session = null;
let me = "";
let current = null; // the alias of the open conversation
let online = new Set();
const typingUntil = new Map(); // alias -> when their "typing…" goes (ms)
let typedAt = 0;
const TYPING_SHOWN_MS = 4000;
const TYPING_EVERY_MS = 2000;
const chats = new Conversations();

// -- text helpers ----------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const time = (seconds) =>
  new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const MARKS = { queued: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "not sent" };
const MARK_LABELS = { queued: "waiting to be sent", sent: "sent", delivered: "delivered", read: "read" };

function setStatus(text) {
  $("status").textContent = text;
  $("status").hidden = !text;
}

// -- accounts --------------------------------------------------------------------------------------

function showTab(which) {
  for (const name of ["login", "register"]) {
    $(`tab-${name}`).setAttribute("aria-selected", String(name === which));
    $(`${name}-form`).hidden = name !== which;
  }
}

async function connect() {
  session?.stop();
  session = new Session(wsUrl);
  wire(session);
  await session.open();
  return session;
}

async function loggedIn(answer) {
  me = answer.alias;
  localStorage.setItem(TOKEN, answer.token);
  $("me").textContent = me;
  $("auth").hidden = true;
  $("app").hidden = false;
  setStatus("");
  const presence = await session.request({ t: "subscribe" });
  online = new Set(presence.online);
  renderOnline();
  renderConversations();
}

function authError(error) {
  $("auth-error").textContent = error.message;
}

$("tab-login").addEventListener("click", () => showTab("login"));
$("tab-register").addEventListener("click", () => showTab("register"));

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  askForNotifications();
  try {
    await connect();
    await loggedIn(await session.login(form.get("alias"), form.get("password")));
  } catch (error) {
    authError(error);
  }
});

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  if (form.get("password") !== form.get("password2")) {
    authError(new Error("the two passwords differ"));
    return;
  }
  const [year, month, day] = String(form.get("birth_date")).split("-");
  askForNotifications();
  try {
    await connect();
    await session.register({
      alias: form.get("alias"),
      full_name: form.get("full_name"),
      birth_date: `${day}/${month}/${year}`,
      password: form.get("password"),
    });
    await loggedIn(await session.login(form.get("alias"), form.get("password")));
  } catch (error) {
    authError(error);
  }
});

function loggedOut() {
  localStorage.removeItem(TOKEN);
  session?.stop();
  session = null;
  me = "";
  $("me").textContent = "";
  current = null;
  chats.clear();
  online = new Set();
  $("messages").replaceChildren();
  $("composer").hidden = true;
  $("app").hidden = true;
  $("auth").hidden = false;
  showTab("login");
}

$("menu-logout").addEventListener("click", async () => {
  const leaving = session;
  session = null; // its events are ignored from now on
  loggedOut(); // at once: the answer only confirms, and a new login must not be undone by it
  try {
    await leaving.request({ t: "logout" });
  } catch {
    // the token is forgotten here either way; the server drops it at its expiry
  } finally {
    leaving.stop();
  }
});

$("menu-delete").addEventListener("click", async () => {
  const password = prompt("Deleting the account removes its messages. Your password:");
  if (!password) return;
  try {
    await session.request({ t: "delete_account", password });
    loggedOut();
  } catch (error) {
    alert(error.message);
  }
});

// -- the session's events -----------------------------------------------------------------------

function wire(s) {
  // Only the current session speaks to the page: one logged out or replaced is ignored.
  const on = (type, handler) => s.addEventListener(type, (event) => s === session && handler(event));
  on("message", ({ detail }) => {
    s.write({ t: "ack", message_ids: [detail.message_id] });
    typingUntil.delete(detail.sender);
    const chat = chats.get(detail.sender);
    chat.add({ id: `in:${detail.message_id}`, mine: false, text: detail.text, at: detail.sent_at,
      message_id: detail.message_id, attachment: detail.attachment });
    if (detail.sender === current && !document.hidden) {
      s.write({ t: "mark_read", message_ids: [detail.message_id] });
    } else {
      chat.unread += 1;
      notify(detail);
    }
    renderAll();
  });
  on("typing", ({ detail }) => {
    typingUntil.set(detail.sender, Date.now() + TYPING_SHOWN_MS);
    renderHeader();
    setTimeout(renderHeader, TYPING_SHOWN_MS + 50);
  });
  on("queued", ({ detail }) => {
    chats.get(detail.to).add({ id: `key:${detail.key}`, mine: true, text: detail.text,
      at: detail.queued_at, state: "queued", attachment: detail.attachment });
    renderAll();
  });
  on("accepted", ({ detail }) => {
    chats.get(detail.to).accepted(detail.key, detail.message_id);
    renderAll();
  });
  on("refused", ({ detail }) => {
    chats.get(detail.to).failed(detail.key, detail.error.message);
    renderAll();
  });
  on("delivered", ({ detail }) => {
    chats.get(detail.to).mark(detail.message_id, "delivered");
    renderAll();
  });
  on("read", ({ detail }) => {
    chats.get(detail.to).mark(detail.message_id, "read");
    renderAll();
  });
  on("presence_changed", ({ detail }) => {
    if (detail.online) online.add(detail.alias);
    else online.delete(detail.alias);
    renderOnline();
    renderHeader();
  });
  on("offline", () => setStatus("Offline: reconnecting… Messages you write are sent once back."));
  on("online", ({ detail }) => {
    localStorage.setItem(TOKEN, detail.token);
    setStatus("");
    // Lost again before the answer: the next "online" subscribes again.
    if (me) s.request({ t: "subscribe" }).then((presence) => {
      online = new Set(presence.online);
      renderOnline();
    }, () => {});
  });
  on("expired", () => loggedOut());
  on("closing", ({ detail }) => setStatus(`The server closed the session: ${detail.message}`));
}

// -- history ------------------------------------------------------------------------------------

async function loadHistory(chat) {
  if (chat.loading || chat.complete) return;
  chat.loading = true;
  try {
    const page = await session.request({ t: "history", peer: chat.peer, before: chat.oldest(), limit: 50 });
    const unread = [];
    for (const entry of page.entries) {
      const mine = entry.sender === me;
      const state = entry.read_at ? "read" : entry.delivered_at ? "delivered" : "sent";
      chat.add({ id: mine ? `out:${entry.message_id}` : `in:${entry.message_id}`, mine, text: entry.text,
        at: entry.sent_at, message_id: entry.message_id, state: mine ? state : undefined,
        attachment: entry.attachment });
      if (!mine && !entry.read_at) unread.push(entry.message_id);
    }
    chat.complete = !page.more;
    if (unread.length && chat.peer === current) session.write({ t: "mark_read", message_ids: unread });
  } finally {
    chat.loading = false;
  }
}

$("messages").addEventListener("scroll", async () => {
  if ($("messages").scrollTop > 40 || !current) return;
  const list = $("messages");
  const before = list.scrollHeight;
  await loadHistory(chats.get(current));
  renderMessages();
  list.scrollTop = list.scrollHeight - before;
});

// -- conversations ------------------------------------------------------------------------------

async function open(peer) {
  if (current) localStorage.setItem(DRAFT + current, $("text").value);
  current = peer;
  const chat = chats.get(peer);
  const unread = chat.unreadIds();
  chat.unread = 0;
  if (unread.length) session.write({ t: "mark_read", message_ids: unread });
  $("composer").hidden = false;
  $("text").value = localStorage.getItem(DRAFT + peer) || "";
  $("app").classList.add("in-chat");
  renderAll();
  if (!chat.started) {
    chat.started = true;
    await loadHistory(chat);
    renderMessages();
  }
  $("text").focus();
}

$("new-chat").addEventListener("submit", (event) => {
  event.preventDefault();
  const alias = $("new-chat-alias").value.trim();
  if (alias) open(alias);
  $("new-chat-alias").value = "";
});

$("back").addEventListener("click", () => {
  $("app").classList.remove("in-chat");
  if (current) localStorage.setItem(DRAFT + current, $("text").value);
  current = null;
  renderAll();
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !current) return;
  session.send(current, text);
  $("text").value = "";
  localStorage.removeItem(DRAFT + current);
});

// -- files --------------------------------------------------------------------------------------

async function sendFiles(files) {
  const peer = current;
  for (const file of files) {
    if (session.welcome && file.size > session.welcome.max_attachment_bytes) {
      setStatus(`${file.name} is larger than the server accepts`);
      continue;
    }
    try {
      setStatus(`Uploading ${file.name}…`);
      const attachment = await session.upload(file, (done) =>
        setStatus(`Uploading ${file.name}: ${Math.round(done * 100)}%`));
      session.send(peer, "", attachment);
      setStatus("");
    } catch (error) {
      setStatus(`${file.name} was not sent: ${error.message}`);
    }
  }
}

$("file").addEventListener("change", () => {
  const files = [...$("file").files];
  $("file").value = "";
  if (current) sendFiles(files);
});
$("chat").addEventListener("dragover", (event) => {
  if (current && event.dataTransfer?.types.includes("Files")) {
    event.preventDefault();
    $("chat").classList.add("dropping");
  }
});
$("chat").addEventListener("dragleave", () => $("chat").classList.remove("dropping"));
$("chat").addEventListener("drop", (event) => {
  $("chat").classList.remove("dropping");
  if (!current || !event.dataTransfer?.files.length) return;
  event.preventDefault();
  sendFiles([...event.dataTransfer.files]);
});

async function saveAttachment(attachment) {
  const blob = await session.download(attachment);
  const link = el("a", { href: URL.createObjectURL(blob), download: attachment.name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

const size = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("text").addEventListener("input", () => {
  if (!current) return;
  localStorage.setItem(DRAFT + current, $("text").value);
  if ($("text").value && Date.now() - typedAt > TYPING_EVERY_MS && session?.online) {
    typedAt = Date.now();
    session.write({ t: "typing", to: current });
  }
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && current) {
    const chat = chats.get(current);
    const unread = chat.unreadIds();
    chat.unread = 0;
    if (unread.length) session?.write({ t: "mark_read", message_ids: unread });
    renderAll();
  }
});

// -- notifications --------------------------------------------------------------------------------

function askForNotifications() {
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
}

function notify(message) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  new Notification(message.sender, { body: message.text.slice(0, 200), tag: `dmds-${message.sender}` });
}

// -- rendering ------------------------------------------------------------------------------------

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren(
    ...chats.sorted().map((chat) => {
      const last = chat.last();
      const button = el("button", { type: "button" },
        el("span", {}, el("span", {}, chat.peer), el("span", { class: "preview" }, last ? last.text : "")));
      if (chat.peer === current) button.setAttribute("aria-current", "true");
      if (chat.unread) {
        button.append(el("span", { class: "badge", "aria-label": `${chat.unread} unread` }, String(chat.unread)));
      }
      button.addEventListener("click", () => open(chat.peer));
      return el("li", {}, button);
    }),
  );
  const unread = chats.totalUnread();
  document.title = unread ? `(${unread}) dmds` : "dmds";
}

function renderOnline() {
  const others = [...online].filter((alias) => alias !== me).sort();
  $("online-count").textContent = `${online.size} online`;
  $("online").replaceChildren(
    ...others.map((alias) => {
      const button = el("button", { type: "button" }, el("span", {}, el("span", { class: "dot" }), alias));
      button.addEventListener("click", () => open(alias));
      return el("li", {}, button);
    }),
  );
}

function renderHeader() {
  $("peer").textContent = current || "Choose a conversation";
  const typing = current && (typingUntil.get(current) || 0) > Date.now();
  $("peer-state").textContent = !current ? "" : typing ? "typing…" : online.has(current) ? "online" : "offline";
}

function renderMessages() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (!current) {
    list.replaceChildren();
    return;
  }
  list.replaceChildren(
    ...chats.get(current).messages().map((m) => {
      const meta = el("span", { class: "meta" }, time(m.at));
      if (m.mine) {
        const mark = el("span", { class: "mark", "aria-label": MARK_LABELS[m.state] || m.state },
          ` ${MARKS[m.state] || ""}`);
        if (m.error) mark.title = m.error;
        meta.append(mark);
      }
      const item = el("li", { class: m.mine ? "bubble mine" : "bubble" }, el("span", { class: "text" }, m.text));
      if (m.attachment) {
        const file = el("button", { type: "button", class: "file" }, `📄 ${m.attachment.name} (${size(m.attachment.size)})`);
        file.setAttribute("aria-label", `Download ${m.attachment.name}`);
        file.addEventListener("click", () => saveAttachment(m.attachment));
        item.append(file);
      }
      item.append(meta);
      item.dataset.state = m.state || "";
      return item;
    }),
  );
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderAll() {
  renderConversations();
  renderHeader();
  renderMessages();
}

// -- start --------------------------------------------------------------------------------------

async function resume() {
  const token = localStorage.getItem(TOKEN);
  if (!token) return;
  try {
    await connect();
    await loggedIn(await session.login(undefined, undefined, token));
  } catch {
    localStorage.removeItem(TOKEN);
    session?.stop();
    session = null;
  }
}

resume();
