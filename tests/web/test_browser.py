"""The web client in a real Chromium (Debian's, by path) against a real server."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, FilePayload, Locator, Page, expect

from dmds.client.session import Message, SessionClient
from tests.conftest import FAST, ServerFactory, ServerProcess, TlsServer
from tests.integration.admin_http import admin_flags, admin_token
from tests.integration.listener import Listener, exchange, message, sent
from tests.integration.test_cluster import classic_online
from tests.wire import send as classic_send

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"


def url(server: ServerProcess, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.web_port}/"


async def sign_up(context: BrowserContext, server: ServerProcess, alias: str, scheme: str = "http") -> Page:
    page = await context.new_page()
    await page.goto(url(server, scheme))
    await page.get_by_role("tab", name="Register").click()
    form = page.locator("#register-form")
    await form.get_by_label("Full name").fill(f"{alias.title()} Pérez")
    await form.get_by_label("Alias").fill(alias)
    await form.get_by_label("Birth date").fill("2000-02-01")
    await form.get_by_label("Password (8 characters or more)").fill("secreto123")
    await form.get_by_label("Password again").fill("secreto123")
    await form.get_by_role("button", name="Register").click()
    await expect(page.locator("#me")).to_have_text(alias)
    return page


async def log_in(context: BrowserContext, server: ServerProcess, alias: str) -> Page:
    page = await context.new_page()
    await page.goto(url(server))
    form = page.locator("#login-form")
    await form.get_by_label("Alias").fill(alias)
    await form.get_by_label("Password").fill("secreto123")
    await form.get_by_role("button", name="Log in").click()
    await expect(page.locator("#me")).to_have_text(alias)
    return page


async def open_chat(page: Page, alias: str) -> None:
    await page.get_by_placeholder("Start a conversation: alias").fill(alias)
    await page.get_by_role("button", name="Open").click()
    await expect(page.locator("#peer")).to_have_text(alias)


async def say(page: Page, text: str) -> None:
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")


def bubbles(page: Page, text: str) -> Locator:
    return page.locator("#messages .bubble .text", has_text=text)


async def test_two_people_register_see_each_other_and_talk(browser: Browser, server: ServerProcess) -> None:
    juan_ctx, maria_ctx = await browser.new_context(), await browser.new_context()
    juan = await sign_up(juan_ctx, server, "juan")
    maria = await sign_up(maria_ctx, server, "maria")
    # Presence, live, with the count.
    await expect(juan.locator("#online")).to_contain_text("maria")
    await expect(juan.locator("#online-count")).to_have_text("2 online")
    await open_chat(juan, "maria")
    await expect(juan.locator("#peer-state")).to_have_text("online")
    hostile = "<img src=x onerror=\"document.title='pwned'\"><script>alert(1)</script>"
    await say(juan, hostile)
    # At maria: unread in the list and the title, shown as text, not HTML.
    await expect(maria.locator("#conversations .badge")).to_have_text("1")
    await expect(maria).to_have_title("(1) dmds")
    await maria.locator("#conversations button", has_text="juan").click()
    await expect(bubbles(maria, "<script>alert(1)</script>")).to_have_count(1)
    assert await maria.locator("#messages img, #messages script").count() == 0
    await expect(maria).to_have_title("dmds")
    # juan sees it read (maria has the conversation open).
    mine = juan.locator("#messages .bubble.mine").first
    await expect(mine).to_have_attribute("data-state", "read")
    await say(maria, "¡hola, juan!")
    await expect(bubbles(juan, "¡hola, juan!")).to_have_count(1)
    # A reload keeps the session (token) and shows the history.
    await juan.reload()
    await expect(juan.locator("#me")).to_have_text("juan")
    await open_chat(juan, "maria")
    await expect(bubbles(juan, "¡hola, juan!")).to_have_count(1)
    await expect(bubbles(juan, "<script>alert(1)</script>")).to_have_count(1)
    assert await juan.title() != "pwned"


async def test_messages_wait_for_an_offline_user_and_typed_offline_go_once(
    browser: Browser, server: ServerProcess
) -> None:
    juan_ctx = await browser.new_context()
    juan = await sign_up(juan_ctx, server, "juan")
    maria_ctx = await browser.new_context()
    await sign_up(maria_ctx, server, "maria")
    await maria_ctx.close()  # maria goes away
    await expect(juan.locator("#online")).not_to_contain_text("maria")
    await open_chat(juan, "maria")
    for n in range(3):
        await say(juan, f"stored {n}")
    await expect(juan.locator("#messages .bubble.mine[data-state=sent]")).to_have_count(3)
    # juan's network goes; what he types meanwhile is sent once he is back.
    await juan_ctx.set_offline(True)
    await expect(juan.locator("#status")).to_contain_text("Offline")
    await say(juan, "typed offline")
    await expect(juan.locator("#messages .bubble.mine[data-state=queued]")).to_have_count(1)
    await juan_ctx.set_offline(False)
    await expect(juan.locator("#status")).to_be_hidden(timeout=20_000)
    await expect(juan.locator("#messages .bubble.mine[data-state=sent]")).to_have_count(4)
    # maria comes back and gets the four, in order, once each.
    maria = await log_in(await browser.new_context(), server, "maria")
    await maria.locator("#conversations button", has_text="juan").click()
    texts = maria.locator("#messages .bubble .text")
    await expect(texts).to_have_text(["stored 0", "stored 1", "stored 2", "typed offline"])
    await expect(juan.locator("#messages .bubble.mine[data-state=read]")).to_have_count(4)


async def test_a_classic_user_and_a_browser_user_talk(browser: Browser, server: ServerProcess) -> None:
    listener: Listener = await asyncio.to_thread(classic_online, server.port, "pepe")
    try:
        maria = await sign_up(await browser.new_context(), server, "maria")
        await expect(maria.locator("#online")).to_contain_text("pepe")
        reply = await asyncio.to_thread(exchange, server.port, classic_send("pepe", "maria", "hola desde C"))
        assert reply == sent(1)
        await maria.locator("#conversations button", has_text="pepe").click()
        await expect(bubbles(maria, "hola desde C")).to_have_count(1)
        await say(maria, "hola, pepe")
        pushed = await asyncio.to_thread(listener.wait, 2)
        assert message("maria", 1, "hola, pepe") in pushed
    finally:
        listener.close()


async def test_phone_width_shows_the_list_and_the_conversation_as_two_screens(
    browser: Browser, server: ServerProcess
) -> None:
    await sign_up(await browser.new_context(), server, "maria")
    phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    juan = await sign_up(phone, server, "juan")
    await expect(juan.locator("#chat")).to_be_hidden()
    await juan.locator("#online button", has_text="maria").click()
    await expect(juan.locator("#chat")).to_be_visible()
    await expect(juan.locator(".sidebar")).to_be_hidden()
    await juan.get_by_role("button", name="Back to conversations").click()
    await expect(juan.locator(".sidebar")).to_be_visible()


async def test_no_serious_accessibility_violation(browser: Browser, server: ServerProcess) -> None:
    context = await browser.new_context(bypass_csp=True)  # axe is injected as a script of its own
    page = await context.new_page()
    await page.goto(url(server))
    screens = {"login": page}
    screens["main"] = await sign_up(context, server, "juan")
    await open_chat(screens["main"], "maria")
    for name, screen in screens.items():
        await screen.add_script_tag(path=str(AXE))
        result = await screen.evaluate("axe.run(document).then(r => JSON.stringify(r.violations))")
        serious = [v for v in json.loads(result) if v["impact"] in ("serious", "critical")]
        assert not serious, (name, [(v["id"], v["help"], len(v["nodes"])) for v in serious])


async def test_the_page_and_its_websocket_over_tls(browser: Browser, tls_server: TlsServer) -> None:
    server = tls_server.server
    juan = await sign_up(await browser.new_context(ignore_https_errors=True), server, "juan", "https")
    maria = await sign_up(await browser.new_context(ignore_https_errors=True), server, "maria", "https")
    await open_chat(juan, "maria")
    await say(juan, "por TLS")
    await maria.locator("#conversations button", has_text="juan").click()
    await expect(bubbles(maria, "por TLS")).to_have_count(1)
    assert await juan.evaluate("location.protocol") == "https:"


async def test_a_desktop_client_and_a_browser_user_talk(browser: Browser, server: ServerProcess) -> None:
    desktop = await SessionClient.connect("127.0.0.1", server.session_port)
    try:
        await desktop.register("pepa", "Pepa Gómez", "03/04/1990", "desktop password")
        await desktop.login("pepa", "desktop password")
        maria = await sign_up(await browser.new_context(), server, "maria")
        accepted = await desktop.send("maria", "hola desde el escritorio")
        await maria.locator("#conversations button", has_text="pepa").click()
        await expect(bubbles(maria, "hola desde el escritorio")).to_have_count(1)
        await say(maria, "hola, pepa")
        async with asyncio.timeout(10):
            async for event in desktop.events():
                if isinstance(event, Message):
                    assert (event.sender, event.text) == ("maria", "hola, pepa")
                    break
        assert accepted.message_id == 1
    finally:
        await desktop.close()


async def test_log_out_and_delete_the_account(browser: Browser, server: ServerProcess) -> None:
    context = await browser.new_context()
    page = await sign_up(context, server, "juan")
    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#login-form")).to_be_visible()
    await page.reload()  # the token went with the logout: no session to resume
    await expect(page.locator("#login-form")).to_be_visible()
    page = await log_in(context, server, "juan")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("secreto123")))
    await page.get_by_role("button", name="Delete account").click()
    await expect(page.locator("#login-form")).to_be_visible()
    form = page.locator("#login-form")
    await form.get_by_label("Alias").fill("juan")
    await form.get_by_label("Password").fill("secreto123")
    await form.get_by_role("button", name="Log in").click()
    await expect(page.locator("#auth-error")).not_to_be_empty()


async def test_a_file_sent_by_drop_and_by_picker_is_downloaded(
    browser: Browser, server: ServerProcess
) -> None:
    juan = await sign_up(await browser.new_context(), server, "juan")
    maria = await sign_up(await browser.new_context(accept_downloads=True), server, "maria")
    await open_chat(juan, "maria")
    content = bytes(range(256)) * 1200  # 300 KiB: several chunks
    payload: FilePayload = {"name": "datos.bin", "mimeType": "application/octet-stream", "buffer": content}
    await juan.locator("#file").set_input_files(files=[payload])
    # Dropped: a DataTransfer with a File, dispatched as the browser does on a drop.
    drop = await juan.evaluate_handle(
        """() => { const dt = new DataTransfer();
                   dt.items.add(new File(["dropped text"], "nota.txt", {type: "text/plain"})); return dt; }"""
    )
    await juan.dispatch_event("#chat", "drop", {"dataTransfer": drop})
    await expect(juan.locator("#messages .bubble.mine[data-state=delivered]")).to_have_count(2)
    await maria.locator("#conversations button", has_text="juan").click()
    for name, expected in (("datos.bin", content), ("nota.txt", b"dropped text")):
        async with maria.expect_download() as download_info:
            await maria.get_by_role("button", name=f"Download {name}").click()
        download = await download_info.value
        assert download.suggested_filename == name
        assert Path(await download.path()).read_bytes() == expected


async def test_typing_is_shown_to_the_other_person(browser: Browser, server: ServerProcess) -> None:
    juan = await sign_up(await browser.new_context(), server, "juan")
    maria = await sign_up(await browser.new_context(), server, "maria")
    await open_chat(juan, "maria")
    await open_chat(maria, "juan")
    await expect(maria.locator("#peer-state")).to_have_text("online")
    await juan.get_by_label("Message", exact=True).press_sequentially("hola, ¿qué tal?")
    await expect(maria.locator("#peer-state")).to_have_text("typing…")
    await expect(maria.locator("#peer-state")).to_have_text("online", timeout=10_000)  # it fades


async def test_history_loads_as_one_scrolls_up_and_drafts_survive_a_reload(
    browser: Browser, server: ServerProcess
) -> None:
    desktop = await SessionClient.connect("127.0.0.1", server.session_port)
    try:
        await desktop.register("pepa", "Pepa Gómez", "03/04/1990", "desktop password")
        await desktop.login("pepa", "desktop password")
        context = await browser.new_context()
        maria = await sign_up(context, server, "maria")
        await maria.get_by_role("button", name="Log out").click()
        for n in range(70):
            await desktop.send("maria", f"mensaje {n}")
    finally:
        await desktop.close()
    maria = await log_in(context, server, "maria")
    await maria.locator("#conversations button", has_text="pepa").click()
    texts = maria.locator("#messages .bubble .text")
    await expect(texts).to_have_count(70)  # pushed at login, as they were stored
    await maria.reload()
    await open_chat(maria, "pepa")
    await expect(texts).to_have_count(50)  # the newest page of History
    await expect(texts.last).to_have_text("mensaje 69")
    await maria.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    await expect(texts).to_have_count(70)
    await expect(texts.first).to_have_text("mensaje 0")
    # A draft stays with its conversation across a reload.
    await maria.get_by_label("Message", exact=True).fill("a medio escribir")
    await maria.reload()
    await open_chat(maria, "pepa")
    await expect(maria.get_by_label("Message", exact=True)).to_have_value("a medio escribir")


async def test_the_keyboard_alone_is_enough(browser: Browser, server: ServerProcess) -> None:
    await sign_up(await browser.new_context(), server, "maria")
    juan = await sign_up(await browser.new_context(), server, "juan")
    await juan.get_by_role("button", name="Log out").click()
    await expect(juan.locator("#me")).to_have_text("")
    await juan.get_by_role("tab", name="Log in").focus()
    keys = juan.keyboard
    await keys.press("Tab")  # past the Register tab
    await keys.press("Tab")
    await keys.type("juan")
    await keys.press("Tab")
    await keys.type("secreto123")
    await keys.press("Enter")
    await expect(juan.locator("#me")).to_have_text("juan")
    await juan.get_by_placeholder("Start a conversation: alias").focus()
    await keys.type("maria")
    await keys.press("Enter")
    await expect(juan.locator("#peer")).to_have_text("maria")
    # Opening a conversation puts the focus in the composer.
    await keys.type("sin ratón")
    await keys.press("Enter")
    await expect(bubbles(juan, "sin ratón")).to_have_count(1)


# Headless Chromium has no screen to hide a tab on: the page is told it is hidden, and notifications
# (real ones, the permission granted) are recorded as they are made.
HIDDEN_TAB = """
Object.defineProperty(Document.prototype, "hidden", { get: () => window.__hidden === true });
window.__notes = [];
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) { super(title, options); window.__notes.push([title, options.body]); }
};
"""


async def test_a_message_in_a_hidden_tab_makes_a_notification(
    browser: Browser, server: ServerProcess
) -> None:
    context = await browser.new_context()
    await context.grant_permissions(["notifications"], origin=url(server).rstrip("/"))
    await context.add_init_script(HIDDEN_TAB)
    maria = await sign_up(context, server, "maria")
    juan = await sign_up(await browser.new_context(), server, "juan")
    await open_chat(juan, "maria")
    await say(juan, "visible")
    await expect(maria.locator("#conversations .badge")).to_have_text("1")
    await maria.evaluate("window.__hidden = true")
    await say(juan, "¿estás?")
    await expect(maria.locator("#conversations .badge")).to_have_text("2")
    assert await maria.evaluate("window.__notes") == [["juan", "¿estás?"]]


async def test_a_graceful_restart_is_survived_and_what_was_typed_goes_once(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(*FAST)
    ctx = await browser.new_context()
    juan = await sign_up(ctx, server, "juan")
    maria_ctx = await browser.new_context()
    await sign_up(maria_ctx, server, "maria")
    await maria_ctx.close()  # offline: juan's messages stay "sent" until she is back
    await open_chat(juan, "maria")
    await say(juan, "before")
    await expect(juan.locator("#messages .bubble.mine[data-state=sent]")).to_have_count(1)
    # SIGTERM: the page is told (goaway), goes offline, queues what is typed, and is back with the
    # server (same data dir and ports), where the queued message goes out once.
    assert await asyncio.to_thread(server.stop) == 0
    await expect(juan.locator("#status")).to_contain_text("Offline")
    await say(juan, "while restarting")
    await expect(juan.locator("#messages .bubble.mine[data-state=queued]")).to_have_count(1)
    ports = ("--port", str(server.port), "--session-port", str(server.session_port))
    server_factory(*FAST, *ports, "--web-port", str(server.web_port), data_dir=server.data_dir)
    await expect(juan.locator("#status")).to_be_hidden(timeout=20_000)
    await expect(juan.locator("#messages .bubble.mine[data-state=sent]")).to_have_count(2)
    maria = await log_in(await browser.new_context(), server, "maria")
    await maria.locator("#conversations button", has_text="juan").click()
    await expect(maria.locator("#messages .bubble .text")).to_have_text(["before", "while restarting"])


async def test_a_page_disconnected_by_the_operator_does_not_come_back_by_itself(
    browser: Browser, server_factory: ServerFactory
) -> None:
    server = server_factory(*FAST, *admin_flags())
    juan = await sign_up(await browser.new_context(), server, "juan")
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.admin_port}/admin/connections/juan", method="DELETE"
    )
    request.add_header("Authorization", f"Bearer {admin_token(server)}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    # KICKED: the page says so and shows the log-in form, and stays there (no reconnection).
    await expect(juan.locator("#auth")).to_be_visible()
    await expect(juan.locator("#status")).to_contain_text("The server closed the session")
    await asyncio.sleep(2)  # longer than the first reconnection's backoff
    await expect(juan.locator("#auth")).to_be_visible()
    await expect(juan.locator("#me")).to_have_text("")
