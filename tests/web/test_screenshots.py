"""Screenshots of the web client for the README, from a real Chromium.

Always run (the conversation must render); the PNGs are written to docs/images only when
DMDS_SCREENSHOTS=1:  DMDS_SCREENSHOTS=1 .venv/bin/pytest tests/web/test_screenshots.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from tests.conftest import ServerProcess
from tests.web.test_browser import bubbles, open_chat, say, sign_up

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


async def _conversation(browser: Browser, server: ServerProcess, **context: Any) -> tuple[Page, Page]:
    juan = await sign_up(await browser.new_context(**context), server, "juan")
    maria = await sign_up(await browser.new_context(), server, "maria")
    await open_chat(juan, "maria")
    await say(juan, "Hola María, ¿llegaste bien?")
    await maria.locator("#conversations button", has_text="juan").click()
    await say(maria, "¡Sí! Acabo de llegar.\nTe llamo luego.")
    await expect(bubbles(juan, "Acabo de llegar")).to_have_count(1)
    await expect(juan.locator("#messages .bubble.mine").first).to_have_attribute("data-state", "read")
    return juan, maria


async def _shot(page: Page, name: str, tmp_path: Path) -> None:
    target = IMAGES if os.environ.get("DMDS_SCREENSHOTS") == "1" else tmp_path
    path = target / name
    await page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one


async def test_screenshots(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    desktop: dict[str, Any] = {"viewport": {"width": 1040, "height": 640}}
    juan, _ = await _conversation(browser, server, **desktop)
    await _shot(juan, "web-conversation.png", tmp_path)
    login = await (await browser.new_context(**desktop)).new_page()
    await login.goto(f"http://127.0.0.1:{server.web_port}/")
    await _shot(login, "web-login.png", tmp_path)


async def test_screenshots_dark_and_phone(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    dark, _ = await _conversation(
        browser, server, viewport={"width": 1040, "height": 640}, color_scheme="dark"
    )
    await _shot(dark, "web-dark.png", tmp_path)
    phone = await sign_up(
        await browser.new_context(viewport={"width": 390, "height": 720}, is_mobile=True), server, "pepe"
    )
    await open_chat(phone, "juan")
    await say(phone, "Hola desde el teléfono")
    await expect(phone.locator("#messages .bubble.mine[data-state=delivered]")).to_have_count(1)
    await _shot(phone, "web-phone.png", tmp_path)
