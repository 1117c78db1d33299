"""The console with `--auth`: a login that takes a bearer token, views and buttons by role.

The token is kept in the tab's sessionStorage and sent in the Authorization header
only: never in a URL (not even the SSE streams': they are read with fetch()), never
in the page. The API still decides: a viewer's forged approve is refused there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.integration.console_support import Up, Watched, chromium, new_page, nexus_up, shot, until

TOKENS = {
    "ada": ("admin", "ada-admin-token-0123456789"),
    "olga": ("operator", "olga-operator-token-0123456789"),
    "vic": ("viewer", "vic-viewer-token-0123456789"),
}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("console-auth")
    tokens = tmp / "tokens.toml"
    tokens.write_text("".join(f'[[token]]\nuser = "{u}"\nrole = "{r}"\ntoken = "{t}"\n\n' for u, (r, t) in TOKENS.items()))
    with nexus_up(tmp, "--auth", str(tokens)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as (_, b):
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Watched]:
    watched = new_page(browser)
    yield watched
    assert watched.errors == [] and watched.offsite == [], (watched.errors, watched.offsite)
    watched.page.context.close()


def login(page: Watched, up: Up, user: str) -> None:
    p = page.page
    p.goto(f"{up.url}/#/jobs")
    expect(p.get_by_role("heading", name="Log in")).to_be_visible()
    p.get_by_label("Token").fill(TOKENS[user][1])
    p.get_by_role("button", name="Log in").click()
    expect(p.locator("#who")).to_have_text(f"{user} ({TOKENS[user][0]})")


def held_job(up: Up) -> str:
    with up.http(TOKENS["olga"][1]) as http:
        res = http.post("/api/v1/jobs", json={"command": "rm -rf /nexus-console-auth-nothing"})
        assert res.status_code == 201, res.text
        job_id = str(res.json()["jobId"])
        until(lambda: http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "approval_required", what="the job held")
    return job_id


def test_the_first_visit_shows_the_login_without_an_error(up: Up, page: Watched) -> None:
    # Review: the console asked whoami without a token, and Chromium logged the 401 as an error.
    p = page.page
    api_calls: list[str] = []
    p.on("request", lambda r: api_calls.append(r.url) if "/api/" in r.url else None)
    p.goto(f"{up.url}/")
    expect(p.get_by_role("heading", name="Log in")).to_be_visible()
    expect(p.get_by_label("Token")).to_be_focused()
    assert page.console_errors == [] and api_calls == [], (page.console_errors, api_calls)
    login(page, up, "vic")  # and the token, once given, is asked about
    assert page.console_errors == [] and [u for u in api_calls if u.endswith("/api/v1/whoami")], (page.console_errors, api_calls)


def test_login_takes_a_token_kept_out_of_urls_and_an_admin_approves(up: Up, page: Watched) -> None:
    p = page.page
    urls: list[str] = []
    p.on("request", lambda r: urls.append(r.url))
    p.goto(f"{up.url}/")
    expect(p.get_by_role("heading", name="Log in")).to_be_visible()
    shot(p, "login")
    # A wrong token is refused and the form stays.
    p.get_by_label("Token").fill("not-a-valid-token-at-all")
    p.get_by_role("button", name="Log in").click()
    expect(p.get_by_role("alert")).to_contain_text("not accepted")
    job_id = held_job(up)
    login(page, up, "ada")
    p.goto(f"{up.url}/#/approvals")
    card = p.locator(f'article[data-job="{job_id}"]')
    expect(card).to_contain_text("rm -rf")
    card.get_by_role("button", name="Approve").click()
    expect(card).to_have_count(0, timeout=15_000)
    with up.http(TOKENS["ada"][1]) as http:
        done = until(lambda: (j := http.get(f"/api/v1/jobs/{job_id}").json())["status"] == "succeeded" and j, what="the job run")
    assert done["approvedBy"] == "ada"
    # The job's live stream was read with the header: the token is in no URL the page asked for.
    p.goto(f"{up.url}/#/jobs/{job_id}")
    expect(p.locator("#stream-state")).to_have_text("(complete)", timeout=30_000)
    secret = TOKENS["ada"][1]
    assert urls and not [u for u in urls if secret in u or "access_token" in u]
    assert p.evaluate("sessionStorage.getItem('nexus.token')") == secret
    assert secret not in p.content()
    # Logging out forgets it.
    p.get_by_role("button", name="Log out").click()
    expect(p.get_by_role("heading", name="Log in")).to_be_visible()
    assert p.evaluate("sessionStorage.getItem('nexus.token')") is None


def test_views_and_buttons_follow_the_role(up: Up, page: Watched) -> None:
    p = page.page
    job_id = held_job(up)
    login(page, up, "vic")
    p.goto(f"{up.url}/#/approvals")
    card = p.locator(f'article[data-job="{job_id}"]')
    expect(card).to_contain_text("Only an admin can approve")
    expect(card.get_by_role("button")).to_have_count(0)
    shot(p, "approvals-viewer")
    p.goto(f"{up.url}/#/run")
    expect(p.get_by_role("button", name="Run", exact=True)).to_be_disabled()
    p.fill("#r-command", "echo a viewer may analyse")
    expect(p.locator("#verdict")).to_contain_text("Would run")  # validate is a viewer's right
    p.goto(f"{up.url}/#/jobs/{job_id}")
    expect(p.get_by_role("button", name="Cancel")).to_be_disabled()
    expect(p.get_by_role("button", name="Approve")).to_have_count(0)
    # The console is not the guard: the same call from this page is refused by the API.
    status = p.evaluate(
        """async (id) => (await fetch(`/api/v1/jobs/${id}/approve`, {method: "POST",
            headers: {"Content-Type": "application/json", Authorization: `Bearer ${sessionStorage.getItem("nexus.token")}`},
            body: "{}"})).status""",
        job_id,
    )
    assert status == 403
    # An operator runs and cancels, but does not approve.
    p.get_by_role("button", name="Log out").click()
    login(page, up, "olga")
    p.goto(f"{up.url}/#/jobs/{job_id}")
    expect(p.get_by_role("button", name="Cancel")).to_be_enabled()
    expect(p.get_by_role("button", name="Approve")).to_have_count(0)
    p.get_by_role("button", name="Cancel").click()
    expect(p.locator("h1")).to_contain_text(re.compile("cancelled"), timeout=30_000)


def test_with_auth_the_api_docs_link_fetches_the_schema_with_the_token(up: Up, page: Watched) -> None:
    # Review: the link opened /schema/swagger, a raw 401 (a link cannot send the tab's token).
    p = page.page
    login(page, up, "vic")
    link = p.locator("#api-docs")
    expect(link).to_have_text("API schema")
    with p.expect_download() as dl:
        link.click()
    doc = json.loads(Path(dl.value.path()).read_text())
    assert doc["openapi"].startswith("3.") and "/api/v1/approvals" in doc["paths"]
    assert "Nexus" in doc["info"]["title"]
