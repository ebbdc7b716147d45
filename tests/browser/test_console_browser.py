"""A new operator uses the console in a real browser."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import sign_in


def test_manager_creates_rooms_in_bulk_and_cannot_reach_another_property(page, live_server, group):
    username, password, _ = group.operator("property_manager", ("P1",))
    sign_in(page, live_server, username, password)
    page.click("#nav-settings")  # the menu groups pages by job: properties and rooms are under Settings
    page.click("#nav-settings + .dropdown-menu >> text=Properties and rooms")
    page.click(f"a:has-text('Mall {group.marker}')")
    page.click(f"a:has-text('B {group.marker}')")
    page.fill("input[name=floor_from]", "2")
    page.fill("input[name=floor_to]", "3")
    page.fill("input[name=room_from]", "01")
    page.fill("input[name=room_to]", "05")
    page.click("form:has(input[value=bulk_rooms]) button.primary")
    expect(page.locator(".flash.ok")).to_contain_text("10 rooms created")  # waits for the new page
    expect(page.locator("a.room", has_text="305")).to_have_count(1)
    response = page.goto(f"{live_server}/properties/{group.property2_id}")
    assert response.status == 404
    assert "Not found" in page.content()
