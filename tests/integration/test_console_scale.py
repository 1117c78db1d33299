"""10,000 jobs in the console's list: real jobs, in a real log, reduced by the orchestrator.

They are published as an external NATS client would (DESIGN.md section 4: a plain
`requested` on the job's subject, with the submitter's credentials), aimed at a node
that does not exist, so the orchestrator judges and rejects each one without running
anything. The list then shows one page of them, newest first, pages on with the
`before` cursor, and filters on the server over all of them; the DOM never holds more rows than
the pages asked for, so the list stays smooth however long the log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import nats
import pytest
from playwright.sync_api import Browser, expect

from tests.integration.console_support import Up, chromium, new_page, nexus_up, shot, until

JOBS = 10_000
# The fixture waits for the orchestrator to reduce 10,000 real jobs (20,000 events): 40-80 s on
# two busy cores, counted in the first test's time.
pytestmark = pytest.mark.timeout(240)
EARLY = 3


async def _publish(up: Up, n: int) -> None:
    nc = await nats.connect(up.nats, user_credentials=str(up.data / "creds" / "submitter.creds"))
    try:
        js = nc.jetstream()
        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    js.publish(
                        f"nexus.evt.job.bulk-{i:05d}.requested",
                        json.dumps({"command": f"echo bulk {i}", "node": "nowhere"}).encode(),
                        headers={"Nats-Msg-Id": f"bulk-{i:05d}:requested"},
                    )
                    for i in range(start, min(start + 500, n))
                )
            )
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with nexus_up(tmp_path_factory.mktemp("console-scale")) as running, running.http() as http:
        # Three jobs through the API first (requested by `anonymous`, they run): the oldest of all.
        for i in range(EARLY):
            assert http.post("/api/v1/jobs", json={"command": f"echo early {i}"}).status_code == 201
        asyncio.run(_publish(running, JOBS))

        def reduced() -> bool:
            answer = http.get("/api/v1/jobs", params={"status": "rejected", "limit": 1})
            if answer.status_code in (503, 504):  # the orchestrator, busy reducing, did not answer the query in time
                return False
            assert answer.status_code == 200, answer.text
            rows = answer.json()["jobs"]
            return bool(rows) and rows[0]["jobId"] == f"bulk-{JOBS - 1:05d}"

        until(reduced, timeout=100, what=f"the orchestrator to reduce {JOBS} jobs")
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as (_, b):
        yield b


# A page of 10,000 jobs on a 2-core machine running other suites: Playwright's 5 s default is
# a deadline, not a condition (CI once saw the first 100 rows come later).
LOADED_MS = 60_000


def test_ten_thousand_jobs_page_filter_and_stay_small_in_the_dom(up: Up, browser: Browser) -> None:
    page = new_page(browser)
    p = page.page
    try:
        p.goto(f"{up.url}/#/jobs")
        rows = p.locator("table.jobs tbody tr")
        expect(rows).to_have_count(100, timeout=LOADED_MS)
        assert rows.first.get_attribute("data-job") == f"bulk-{JOBS - 1:05d}"  # newest first
        expect(p.get_by_role("status")).to_contain_text("100 jobs shown (more below)", timeout=LOADED_MS)
        shot(p, "jobs-10000")
        for shown in (200, 300):
            p.get_by_role("button", name="Load more").click()
            expect(rows).to_have_count(shown, timeout=LOADED_MS)
        assert rows.last.get_attribute("data-job") == f"bulk-{JOBS - 300:05d}"
        p.keyboard.press("End")
        expect(rows.last).to_be_in_viewport()
        # Filters run over all of them on the server: the three oldest jobs, 10,000 rows down.
        p.fill("#f-user", "anonymous")
        expect(rows).to_have_count(EARLY, timeout=LOADED_MS)
        assert set(rows.locator("td:nth-child(5)").all_inner_texts()) == {"anonymous"}
        expect(p.get_by_role("button", name="Load more")).to_be_hidden()
        p.fill("#f-user", "")
        p.select_option("#f-status", "succeeded")
        expect(rows).to_have_count(EARLY, timeout=LOADED_MS)
        assert page.errors == [] and page.offsite == []
    finally:
        p.context.close()
