from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

#: Debian's Chromium: Playwright's own browser download cannot work here.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium, whose pages must raise no uncaught JavaScript error during the test."""
    errors: list[str] = []

    def watch(context: BrowserContext) -> None:
        context.on("weberror", lambda e: errors.append(f"{e.page.url if e.page else '?'}: {e.error}"))

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        new_context = chromium.new_context

        async def watched(**options: Any) -> BrowserContext:
            context = await new_context(**options)
            watch(context)
            return context

        chromium.new_context = watched  # type: ignore[method-assign]
        yield chromium
        await chromium.close()
    assert not errors, errors
