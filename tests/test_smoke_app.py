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


def test_unknown_api_path_and_wrong_method_answer_json(client):
    missing = client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.delete("/api/v1/openapi.json")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert client.delete("/login").status_code == 405
