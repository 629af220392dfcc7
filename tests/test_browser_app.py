"""The app in a real browser: the page loads, the model card fills in, tabs are there."""

import pytest

from browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_app_shows_model_card(browser, live_app):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(live_app, wait_until="domcontentloaded", timeout=120_000)
    card = page.locator("#model-card")
    card.get_by_text("18 layers").wait_for(timeout=180_000)
    assert "dequantized" in card.inner_text()
    screenshot(page, "app")
    page.close()
