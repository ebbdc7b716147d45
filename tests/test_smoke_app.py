from tests.conftest import csrf_token


def test_login_page_renders(client):
    response = client.get("/login")
    assert response.status_code == 200
    assert "csrf_token" in response.get_data(as_text=True)


def test_admin_signs_in_and_sees_dashboard(client, operator, group):
    operator("group_admin")
    page = client.get("/properties").get_data(as_text=True)
    assert f"Mall {group.marker}" in page
    assert f"Dorm {group.marker}" in page
    assert csrf_token(client, "/properties")
