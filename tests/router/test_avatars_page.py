"""The avatar registration page (web/avatars.html) in headless Chromium against a real router
(``python -m router``, CORS allowing the page's origin) with its real registration jobs: a photo
dropped on the page becomes a ready avatar whose id and mouths the page shows; a photo without a
face is refused with the reason; the same photo with the neural mouth chosen is another avatar;
the list shows the backend's avatars and deletes them."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from scripts.browser import chromium_path
from scripts.servers import DEV_API_KEY, RouterProcess, serve_web

pytestmark = [pytest.mark.livekit, pytest.mark.redis]


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


async def _drop(page, data: bytes, name: str) -> None:
    """Drag a file onto the drop zone, as a person dragging it from their desktop."""
    await page.evaluate("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "image/jpeg"}));
        const drop = document.getElementById("drop");
        for (const type of ["dragenter", "dragover", "drop"]) {
          drop.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true}));
        }
    }""", [base64.b64encode(data).decode(), name])


async def _settled(page, timeout_ms: int = 90_000) -> dict:
    await page.wait_for_function(
        "['ready', 'refused', 'failed', 'error'].includes(window.avatarsUi.state)",
        timeout=timeout_ms)
    return await page.evaluate("({...window.avatarsUi})")


async def test_register_an_avatar_from_the_page(livekit_server, redis_url):
    from playwright.async_api import async_playwright
    from skimage import data

    web = serve_web()
    origin = f"http://127.0.0.1:{web.server_address[1]}"
    try:
        with RouterProcess(livekit_server, redis_url, extra_env={
                "AVATAR_ROUTER__CORS_ORIGINS": f'["{origin}"]'}) as router:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium_path(),
                                                   headless=True, args=["--no-sandbox"])
                page = await browser.new_page(viewport={"width": 1000, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{origin}/avatars.html?router=http://{router.address}")
                # without a key the page says so and sends nothing
                await _drop(page, b"x", "a.jpg")
                assert (await _settled(page))["state"] == "error"
                assert "API key" in await page.inner_text("#status")

                await page.fill("#key", DEV_API_KEY)
                await page.dispatch_event("#key", "change")
                await page.fill("#name", "Ms Collins")
                await _drop(page, _jpeg(data.astronaut()), "collins.jpg")
                ui = await _settled(page)
                assert ui["state"] == "ready", (ui, await page.inner_text("#status"))
                assert await page.inner_text("#avatar-id") == ui["id"]
                assert "Ms Collins" in await page.inner_text("#status")
                # the 15 mouths are shown (the preview image loaded, wider than tall)
                w, h = await page.evaluate(
                    "[document.getElementById('preview').naturalWidth,"
                    " document.getElementById('preview').naturalHeight]")
                assert w > h > 200, (w, h)
                await page.screenshot(path=str(router.workdir / "avatars_page.png"))

                # the same photo with the neural mouth is another avatar, registered as such
                await page.select_option("#renderer", "neural")
                await page.fill("#name", "Collins neural")
                await _drop(page, _jpeg(data.astronaut()), "collins.jpg")
                neural = await _settled(page)
                assert neural["state"] == "ready" and neural["id"] != ui["id"], neural
                async with httpx.AsyncClient() as http:
                    got = (await http.get(f"http://{router.address}/v1/avatars/{neural['id']}",
                                          headers={"X-API-Key": DEV_API_KEY})).json()
                assert got["renderer"] == "neural", got
                await page.select_option("#renderer", "sprite")

                # no face: refused, with the reason shown
                await page.fill("#name", "")
                await _drop(page, _jpeg(np.full((300, 300, 3), 180, np.uint8)), "wall.jpg")
                ui = await _settled(page)
                assert ui["state"] == "refused", ui
                assert "face" in (await page.inner_text("#status")).lower()

                # the list shows both; deleting one (confirmed) removes it from the router
                await page.wait_for_function("window.avatarsUi.listed.length === 3")
                page.on("dialog", lambda d: d.accept())
                await page.click("button[aria-label='Delete wall']")
                await page.wait_for_function("window.avatarsUi.listed.length === 2")
                listed = await page.evaluate("window.avatarsUi.listed")
                assert sorted(a["name"] for a in listed) == ["Collins neural", "Ms Collins"]
                assert not errors, errors
                await browser.close()
    finally:
        web.shutdown()
