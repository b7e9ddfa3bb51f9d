"""The midrun extension in the real ComfyUI frontend, as a user goes through it: the demo
workflow on landing, a run paused at a step with its intermediate preview, mid-run edits
with undo, resume to the final image, a node breakpoint with inspection and step over,
abort with a reason, the pipeline paused with two jobs, a batch of four with incrementing
seeds, Configure & Run, and a server restart survived. Each test has a page of its own
and makes the jobs it needs (the server is settled between tests: tests/ui/conftest.py),
so any of them runs alone."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from midrun.server.files import EXAMPLES_DIR
from tests.server.conftest import FAST, LiveServer, start_server
from tests.ui.conftest import ARTIFACTS, Canvas, open_canvas

SLOW_STEPS = 150  # long enough on a CPU to pause by hand


def widget(canvas: Canvas, node_type: str, name: str, value: Any) -> None:
    """Change a widget the way the canvas does when a user edits it (``setValue``)."""
    canvas.js("""([type, name, value]) => {
        const node = app.graph.nodes.find((n) => n.type === type);
        node.widgets.find((w) => w.name === name).setValue(value, { node, canvas: app.canvas });
        app.graph.setDirtyCanvas(true, true);
    }""", [node_type, name, value])


def widget_value(canvas: Canvas, node_type: str, name: str) -> Any:
    return canvas.js("""([type, name]) => app.graph.nodes.find((n) => n.type === type)
        .widgets.find((w) => w.name === name).value""", [node_type, name])


def run(canvas: Canvas) -> str:
    """Press Run; returns the new job's id."""
    before = canvas.js("() => [...window.midrun.store.own]")
    canvas.page.get_by_role("button", name="Run", exact=True).first.click()
    return canvas.wait_js(
        "(before) => [...window.midrun.store.own].find((id) => !before.includes(id))", before)


def card_state(canvas: Canvas, state: str, timeout: float = 60_000) -> None:
    canvas.page.wait_for_selector(f".midrun-card[data-state='{state}']", timeout=timeout)


def job_record(canvas: Canvas, job_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=canvas.server.url, timeout=30) as http:
        return http.get(f"/api/jobs/{job_id}").json()


def fetch_image(canvas: Canvas, url: str) -> Image.Image:
    if url.startswith("/"):
        url = canvas.server.url + url
    response = canvas.page.request.get(url)
    assert response.ok, url
    return Image.open(io.BytesIO(response.body()))


def paused_job(canvas: Canvas) -> str:
    """Run the demo with SLOW_STEPS steps and pause it from its card after step 3."""
    widget(canvas, "KSampler", "steps", SLOW_STEPS)
    job_id = run(canvas)
    card_state(canvas, "running")
    canvas.wait_js("(id) => (window.midrun.store.jobs.get(id)?.step ?? 0) >= 3", job_id)
    canvas.page.click(".midrun-card [data-action='pause']")
    card_state(canvas, "paused")
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'paused'", job_id)
    return job_id


def edit_prompt(canvas: Canvas, text: str) -> None:
    """Change the positive prompt's text as a user would; its edit shows on the card."""
    positive = canvas.js("() => app.graph.nodes.find((n) => n.title === 'Positive prompt').id")
    canvas.js("""([id, text]) => { const node = app.graph.getNodeById(id);
        node.widgets.find((w) => w.name === 'text')
            .setValue(text, { node, canvas: app.canvas }); }""", [positive, text])  # fmt: skip
    canvas.page.wait_for_selector(".midrun-edits li[data-input='text']")


def test_landing_shows_the_demo_workflow_without_errors_or_outside_calls(canvas: Canvas) -> None:
    types = canvas.js("() => app.graph.nodes.map((n) => n.type).sort()")
    assert types == ["CLIPTextEncode", "CLIPTextEncode", "CheckpointLoaderSimple",
                     "EmptyLatentImage", "KSampler", "SaveImage", "VAEDecode"]  # fmt: skip
    assert widget_value(canvas, "CheckpointLoaderSimple", "ckpt_name") == "midrun-demo"
    assert canvas.js("() => app.extensionManager.setting.get('Comfy.TutorialCompleted')")
    canvas.page.wait_for_load_state("networkidle")  # late start-up requests made
    outside = [u for u in canvas.requests if not u.startswith(canvas.server.url)
               and not u.startswith(("data:", "blob:"))]  # fmt: skip
    assert outside == []
    assert canvas.errors() == []
    canvas.shot("01-landing")


def test_pause_at_a_step_shows_the_paused_state_and_an_intermediate_preview(canvas: Canvas) -> None:
    job_id = paused_job(canvas)
    card = canvas.page.locator(".midrun-card")
    assert "Paused here" in card.inner_text()
    label = card.locator(".midrun-live figcaption")
    label.wait_for()
    text = label.inner_text()
    assert text.startswith("Intermediate preview · step ") and text.endswith(f"/{SLOW_STEPS}")
    src = card.locator(".midrun-live img").get_attribute("src")
    assert_not_blank_preview(fetch_image(canvas, src))
    assert canvas.page.locator(".midrun-outline.state-paused").is_visible()
    assert job_record(canvas, job_id)["midrun"]["state"] == "paused"
    canvas.shot("02-paused")
    # click to enlarge, click to close
    card.locator(".midrun-live img").click()
    assert canvas.page.locator(".midrun-lightbox figcaption").inner_text() == text
    canvas.page.locator(".midrun-lightbox").click()


def assert_not_blank_preview(image: Image.Image) -> None:
    low, high = image.convert("L").getextrema()
    assert image.width >= 32 and high - low > 20, (image.size, low, high)


def test_mid_run_edits_are_marked_and_undone(canvas: Canvas) -> None:
    job_id = paused_job(canvas)
    widget(canvas, "KSampler", "cfg", 7.0)
    canvas.page.wait_for_selector(".midrun-edits li[data-input='cfg']")
    edit_prompt(canvas, "a blue star on a white background")
    items = canvas.page.locator(".midrun-edits li")
    assert items.count() == 2
    cfg = canvas.page.locator(".midrun-edits li[data-input='cfg']").inner_text()
    assert "modified mid-run" in cfg and "5" in cfg and "7" in cfg
    # the widgets say it too, and the nodes carry a badge
    label = canvas.js("""() => app.graph.nodes.find((n) => n.type === 'KSampler')
        .widgets.find((w) => w.name === 'cfg').label""")
    assert label == "cfg ✎ 5 → 7"
    assert canvas.js("""() => app.graph.nodes.find((n) => n.type === 'KSampler').badges
        .some((b) => b.midrunEdit)""")
    canvas.shot("03-edits")
    canvas.page.click(".midrun-edits li[data-input='cfg'] [data-action='undo-edit']")
    canvas.page.wait_for_function(
        "() => document.querySelectorAll('.midrun-edits li').length === 1")
    assert widget_value(canvas, "KSampler", "cfg") == 5.0
    assert canvas.js("() => window.midrun.store.active().id") == job_id
    with httpx.Client(base_url=canvas.server.url) as http:
        pending = http.get(f"/api/jobs/{job_id}/state").json()["pending_edits"]
    assert [(e["input_name"], e["new"]) for e in pending] == [
        ("text", "a blue star on a white background")]


def test_the_parameters_panel_edits_and_shows_the_servers_refusal(canvas: Canvas) -> None:
    job_id = paused_job(canvas)
    edit_prompt(canvas, "a blue star on a white background")
    canvas.page.click(".midrun-card [data-action='parameters']")
    dialog = canvas.page.locator(".midrun-dialog")
    dialog.wait_for()
    text = dialog.locator("textarea[data-node='6'][data-field='text']")
    assert text.input_value() == "a blue star on a white background"  # the pending value
    cfg = dialog.locator("input[data-node='3'][data-field='cfg']")
    assert cfg.get_attribute("max") == "100"
    cfg.fill("500")
    dialog.locator("[data-action='ok']").click()
    error = dialog.locator(".midrun-dialog-error")
    error.wait_for()
    canvas.page.wait_for_function(
        "() => document.querySelector('.midrun-dialog-error').textContent.includes('500')")
    assert "cfg" in error.inner_text()
    canvas.shot("04-edit-refused")
    cfg.fill("6")
    dialog.locator("[data-action='ok']").click()
    dialog.wait_for(state="detached")
    canvas.page.wait_for_selector(".midrun-edits li[data-input='cfg']")
    assert widget_value(canvas, "KSampler", "cfg") == 6
    with httpx.Client(base_url=canvas.server.url) as http:
        pending = http.get(f"/api/jobs/{job_id}/state").json()["pending_edits"]
    assert sorted((e["input_name"], e["new"]) for e in pending) == [
        ("cfg", 6), ("text", "a blue star on a white background")]


def toast_text(canvas: Canvas, text: str, timeout: float = 15_000) -> str:
    toast = canvas.page.locator(f"text={text} >> visible=true").first
    toast.wait_for(timeout=timeout)
    return toast.evaluate("(el) => el.closest('[role=alert], .p-toast-message, div').innerText")


def test_an_edit_the_sampler_cannot_take_is_refused_with_the_servers_reason(canvas: Canvas) -> None:
    paused_job(canvas)
    widget(canvas, "KSampler", "cfg", 6.0)
    canvas.page.wait_for_selector(".midrun-edits li[data-input='cfg']")
    widget(canvas, "KSampler", "sampler_name", "heun")  # not swapped in the middle of a run
    text = toast_text(canvas, "Edit refused: KSampler / sampler_name")
    canvas.page.wait_for_function("""() => app.graph.nodes.find((n) => n.type === 'KSampler')
        .widgets.find((w) => w.name === 'sampler_name').value === 'euler'""")
    detail = canvas.page.locator("text=cannot change mid-run >> visible=true").first
    detail.wait_for()
    assert "takes only cfg" in detail.inner_text(), (text, detail.inner_text())
    assert canvas.page.locator(".midrun-edits li").count() == 1  # cfg only
    canvas.shot("05-edit-refused-by-sampler")


def test_resume_applies_the_edits_and_completes_with_the_image(canvas: Canvas) -> None:
    job_id = paused_job(canvas)
    widget(canvas, "KSampler", "cfg", 6.0)
    canvas.page.wait_for_selector(".midrun-edits li[data-input='cfg']")
    edit_prompt(canvas, "a blue star on a white background")
    assert canvas.js("() => window.midrun.store.active().id") == job_id
    canvas.page.click(".midrun-card [data-action='continue']")
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'completed'", job_id,
                   timeout=180_000)  # fmt: skip
    record = job_record(canvas, job_id)
    assert record["outputs_count"] == 1
    prompt = record["workflow"]["prompt"]
    assert prompt["6"]["inputs"]["text"] == "a blue star on a white background"
    assert prompt["3"]["inputs"]["cfg"] == 6 and prompt["3"]["inputs"]["sampler_name"] == "euler"
    # the Save Image node shows the result
    canvas.page.wait_for_function("""() => {
        const node = app.graph.nodes.find((n) => n.type === 'SaveImage');
        const image = node.imgs?.[0];
        return image?.complete && image.naturalWidth > 0; }""")
    open_jobs(canvas)
    row = canvas.page.locator(f".midrun-job[data-job-id='{job_id}']")
    assert row.get_attribute("data-state") == "completed"
    row.locator("img.midrun-thumb").wait_for()
    canvas.shot("06-completed")


def open_jobs(canvas: Canvas) -> None:
    if canvas.page.locator(".midrun-tray").count() == 0:
        canvas.page.click("[data-testid='midrun-jobs-tab-button']")
    canvas.page.wait_for_selector(".midrun-tray")


def command(canvas: Canvas, command_id: str) -> None:
    """Run a frontend command without waiting for it (a dialog command ends on close)."""
    canvas.js("(id) => { app.extensionManager.command.execute(id); }", command_id)


def node_menu(canvas: Canvas, node_type: str, entry: str) -> None:
    """Right-click a node's title and choose an entry of its context menu."""
    x, y = canvas.js("""(type) => {
        const n = app.graph.nodes.find((n) => n.type === type);
        const ds = app.canvas.ds, r = app.canvas.canvas.getBoundingClientRect();
        return [(n.pos[0] + 40 + ds.offset[0]) * ds.scale + r.left,
                (n.pos[1] - 15 + ds.offset[1]) * ds.scale + r.top]; }""", node_type)
    canvas.page.mouse.click(x, y, button="right")
    canvas.page.locator(".litemenu-entry", has_text=entry).first.click()


def node_id(canvas: Canvas, node_type: str) -> str:
    return str(canvas.js("(t) => app.graph.nodes.find((n) => n.type === t).id", node_type))


def paused_at(canvas: Canvas, job_id: str, node: str) -> None:
    canvas.wait_js("(a) => window.midrun.store.jobs.get(a[0])?.state === 'paused'"
                   " && window.midrun.store.jobs.get(a[0]).node === a[1]", [job_id, node])


def test_a_node_breakpoint_stops_the_run_for_inspection_step_over_and_continue(
        canvas: Canvas) -> None:  # fmt: skip
    widget(canvas, "KSampler", "steps", 20)
    node_menu(canvas, "VAEDecode", "Add breakpoint")
    assert canvas.js("""() => app.graph.nodes.find((n) => n.type === 'VAEDecode')
        .badges.some((b) => b.midrunBreakpoint)""")
    decode, save = node_id(canvas, "VAEDecode"), node_id(canvas, "SaveImage")
    job_id = run(canvas)
    paused_at(canvas, job_id, decode)
    card = canvas.page.locator(".midrun-card[data-state='paused']")
    card.wait_for()
    assert "Paused here · breakpoint" in card.inner_text()
    card.locator("[data-action='inspect']").click()
    inspector = canvas.page.locator(f".midrun-inspector[data-node='{decode}']")
    inspector.wait_for()
    inputs = inspector.locator("table").first.inner_text()
    assert "samples" in inputs and "← KSampler" in inputs and "vae" in inputs
    canvas.shot("07-breakpoint")
    card.locator("[data-action='step-over']").click()
    paused_at(canvas, job_id, save)
    assert "stepped" in canvas.page.locator(".midrun-card").inner_text()
    canvas.page.click(".midrun-card [data-action='continue']")
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'completed'", job_id)
    events = [(e["kind"], e["node_id"])
              for e in httpx.get(f"{canvas.server.url}/api/jobs/{job_id}/events").json()]
    assert ("breakpoint_set", decode) in events and ("breakpoint_hit", decode) in events
    assert ("step_reached", save) in events and events.count(("breakpoint_hit", decode)) == 1
    node_menu(canvas, "VAEDecode", "Remove breakpoint")
    assert not canvas.js("""() => app.graph.nodes.find((n) => n.type === 'VAEDecode')
        .badges.some((b) => b.midrunBreakpoint)""")


def dialog_answer(canvas: Canvas, field: str, value: str) -> None:
    dialog = canvas.page.locator(".midrun-dialog")
    dialog.locator(f"input[name='{field}']").fill(value)
    dialog.locator("[data-action='ok']").click()
    dialog.wait_for(state="detached")


def test_break_at_a_step_and_on_a_condition(canvas: Canvas) -> None:
    node_menu(canvas, "KSampler", "Break at step…")
    dialog_answer(canvas, "step", "5")
    node_menu(canvas, "KSampler", "Condition…")
    dialog_answer(canvas, "condition", "step >= 15")
    badge = canvas.js("""() => app.graph.nodes.find((n) => n.type === 'KSampler').badges
        .filter((b) => b.midrunBreakpoint).map((b) => b().text)""")
    assert badge == ["● 2 breakpoints"]
    sampler = node_id(canvas, "KSampler")
    # the preview interval setting (midrun > Previews) applies to the jobs queued after it
    assert canvas.js("() => app.extensionManager.setting.get('midrun.Preview.EverySteps')") == 1
    canvas.js("() => app.extensionManager.setting.set('midrun.Preview.EverySteps', 4)")
    job_id = run(canvas)
    paused_at(canvas, job_id, sampler)
    card = canvas.page.locator(".midrun-card[data-state='paused']")
    assert "breakpoint" in card.inner_text() and "step 5/20" in card.inner_text()
    card.locator("[data-action='continue']").click()
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.hit?.step === 15", job_id)
    paused_at(canvas, job_id, sampler)
    node_menu(canvas, "KSampler", "Remove breakpoint")  # from the canvas and the live job
    canvas.page.click(".midrun-card [data-action='continue']")
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'completed'", job_id)
    hits = [e["step"] for e in httpx.get(f"{canvas.server.url}/api/jobs/{job_id}/events").json()
            if e["kind"] == "breakpoint_hit"]  # fmt: skip
    assert hits == [5, 15]
    index = httpx.get(f"{canvas.server.url}/api/jobs/{job_id}/preview?format=json").json()
    assert [p["step"] for p in index["previews"]] == [4, 8, 12, 16, 20]
    canvas.js("() => app.extensionManager.setting.set('midrun.Preview.EverySteps', 1)")


def test_abort_with_a_reason_shows_in_the_tray(canvas: Canvas) -> None:
    widget(canvas, "KSampler", "steps", SLOW_STEPS)
    job_id = run(canvas)
    canvas.wait_js("(id) => (window.midrun.store.jobs.get(id)?.step ?? 0) >= 2", job_id)
    open_jobs(canvas)
    row = canvas.page.locator(f".midrun-job[data-job-id='{job_id}']")
    row.locator("[data-action='abort']").click()
    dialog = canvas.page.locator(".midrun-dialog")
    dialog.locator("textarea[name='reason']").fill("wrong colour, starting over")
    dialog.locator("[data-action='ok']").click()
    canvas.page.wait_for_selector(f".midrun-job[data-job-id='{job_id}'][data-state='aborted']")
    assert "Reason: wrong colour, starting over" in row.inner_text()
    record = job_record(canvas, job_id)
    assert record["midrun"]["state"] == "aborted"
    assert record["midrun"]["reason"] == "wrong colour, starting over"
    canvas.shot("08-aborted")


def test_pause_and_resume_the_pipeline_with_two_jobs(canvas: Canvas) -> None:
    widget(canvas, "KSampler", "steps", SLOW_STEPS)
    first, second = run(canvas), run(canvas)
    canvas.wait_js("(id) => (window.midrun.store.jobs.get(id)?.step ?? 0) >= 2", first)
    open_jobs(canvas)
    canvas.page.click(".midrun-tray [data-action='pause-pipeline']")
    banner = canvas.page.locator(".midrun-banner")
    banner.wait_for()
    canvas.page.wait_for_function(
        "(id) => document.querySelector('.midrun-banner')?.innerText.includes(id.slice(0, 8))",
        arg=first)  # fmt: skip
    text = banner.inner_text()
    assert "Pipeline paused" in text
    assert f"Was running: {first[:8]}" in text and second[:8] in text.split("Pending:")[1]
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'paused'", first)
    canvas.shot("09-pipeline-paused")
    canvas.page.click(".midrun-tray [data-action='resume-pipeline']")
    banner.wait_for(state="detached")
    canvas.wait_js(
        "(id) => ['running', 'completed'].includes(window.midrun.store.jobs.get(id)?.state)", first)
    with httpx.Client(base_url=canvas.server.url) as http:  # not needed further: end them
        for job_id in (first, second):
            http.post(f"/api/jobs/{job_id}/abort", json={"reason": "test over"})
    for job_id in (first, second):
        canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'aborted'", job_id)


def test_a_batch_of_four_with_incrementing_seeds(canvas: Canvas) -> None:
    widget(canvas, "KSampler", "steps", 20)
    command(canvas, "midrun.Batch")
    dialog = canvas.page.locator(".midrun-dialog")
    dialog.locator("input[name='count']").fill("4")
    dialog.locator("select[name='seed-mode']").select_option("increment")
    canvas.shot("10-batch-dialog")
    dialog.locator("[data-action='ok']").click()
    dialog.wait_for(state="detached")
    open_jobs(canvas)
    card = canvas.page.locator(".midrun-batch").first
    card.wait_for()
    batch_id = card.get_attribute("data-batch-id")
    canvas.page.wait_for_function(
        "(id) => document.querySelectorAll(`.midrun-batch[data-batch-id='${id}'] .cell`)"
        ".length === 4", arg=batch_id)  # fmt: skip
    canvas.page.wait_for_function(
        "(id) => document.querySelector(`.midrun-batch[data-batch-id='${id}']`)"
        "?.querySelectorAll('.cell.state-completed').length === 4", arg=batch_id, timeout=240_000)
    batch = httpx.get(f"{canvas.server.url}/api/batches/{batch_id}").json()
    seeds = sorted(job["parameters_used"]["3.seed"] for job in batch["jobs"])
    assert seeds == [7, 8, 9, 10]
    card.locator("[data-action='compare']").click()
    figures = canvas.page.locator(".midrun-compare figure img")
    canvas.page.wait_for_function("""() => {
        const imgs = document.querySelectorAll('.midrun-compare figure img');
        return imgs.length === 4 && [...imgs].every((i) => i.complete && i.naturalWidth > 0); }""")
    assert figures.count() == 4
    canvas.shot("11-batch-compared")


def test_a_batch_cycles_a_prompt_list_and_sweeps_a_number(canvas: Canvas) -> None:
    widget(canvas, "KSampler", "steps", 20)
    command(canvas, "midrun.Batch")
    dialog = canvas.page.locator(".midrun-dialog")
    dialog.locator("input[name='count']").fill("2")
    dialog.locator("select[name='seed-mode']").select_option("fixed")
    dialog.locator("select[name='prompt-field']").select_option("6.text")
    dialog.locator("textarea[name='prompts']").fill(
        "a red circle on a white background\na blue square on a black background")
    dialog.locator("select[name='sweep-field']").select_option("3.cfg")
    for name, value in (("start", "3"), ("stop", "4"), ("step", "1")):
        dialog.locator(f"input[name='sweep-{name}']").fill(value)
    dialog.locator("[data-action='ok']").click()
    dialog.wait_for(state="detached")
    batch_id = canvas.wait_js("() => [...window.midrun.store.batches.values()]"
                              ".find((b) => b.total_count === 2)?.id")  # fmt: skip
    batch = httpx.get(f"{canvas.server.url}/api/batches/{batch_id}").json()
    used = sorted((j["parameters_used"]["6.text"], j["parameters_used"]["3.cfg"],
                   j["parameters_used"]["3.seed"]) for j in batch["jobs"])  # fmt: skip
    assert used == [("a blue square on a black background", 4, 7),
                    ("a red circle on a white background", 3, 7)]  # fmt: skip
    open_jobs(canvas)
    canvas.page.select_option(".midrun-filter", "")  # every job, not one batch
    canvas.page.wait_for_function(
        "(id) => document.querySelector(`.midrun-batch[data-batch-id='${id}']`)"
        "?.querySelectorAll('.cell.state-completed').length === 2", arg=batch_id, timeout=120_000)


def test_configure_and_run_prefills_the_last_used_parameters(canvas: Canvas) -> None:
    widget(canvas, "KSampler", "steps", 20)
    command(canvas, "midrun.ConfigureRun")
    dialog = canvas.page.locator(".midrun-dialog")
    prompt = dialog.locator("textarea[data-node='6'][data-field='text']")
    prompt.wait_for()
    assert dialog.locator("select[data-field='sampler_name']").input_value() == "euler"
    assert dialog.locator("select[data-field='scheduler']").count() == 1
    steps = dialog.locator("input[data-field='steps']")
    assert steps.get_attribute("min") == "1" and steps.get_attribute("max") == "10000"
    seed = dialog.locator("input[data-field='seed']")
    before = seed.input_value()
    dialog.locator("[data-action='randomize']").click()
    assert seed.input_value() != before
    prompt.fill("a green circle on a black background")
    canvas.shot("12-configure-and-run")
    dialog.locator("[data-action='ok']").click()
    dialog.wait_for(state="detached")
    job_id = canvas.js("() => window.midrun.store.activeId")
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'completed'", job_id)
    with httpx.Client(base_url=canvas.server.url) as http:
        used = http.get(f"/api/jobs/{job_id}").json()
    listed = httpx.get(f"{canvas.server.url}/api/jobs").json()["jobs"]
    assert next(j for j in listed if j["id"] == job_id)["midrun"]["state"] == "completed"
    text = used["workflow"]["prompt"]["6"]["inputs"]["text"]
    assert text == "a green circle on a black background"
    command(canvas, "midrun.ConfigureRun")
    again = canvas.page.locator(".midrun-dialog textarea[data-node='6'][data-field='text']")
    again.wait_for()
    assert again.input_value() == "a green circle on a black background"
    canvas.page.locator(".midrun-dialog [data-action='cancel']").click()


@pytest.fixture
def own_canvas(browser: Any, own_demo: LiveServer) -> Iterator[Canvas]:
    """A page on a server of the test's own: the restart test stops the server."""
    page = open_canvas(browser, own_demo)
    try:
        yield page
    finally:
        page.page.context.close()


def test_a_server_restart_is_survived_without_lost_or_doubled_jobs(
        own_canvas: Canvas, request: pytest.FixtureRequest) -> None:  # fmt: skip
    canvas = own_canvas
    # A job from before the restart, which the page must list once after it.
    widget(canvas, "KSampler", "steps", 2)
    before = run(canvas)
    canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'completed'", before)
    open_jobs(canvas)
    canvas.page.select_option(".midrun-filter", "")  # every job, not one batch
    old = canvas.server
    old.stop()
    canvas.page.wait_for_selector(".midrun-offline", timeout=15_000)  # "reconnecting…"
    canvas.shot("13-reconnecting")
    new = start_server(old.server.config, FAST)
    request.addfinalizer(new.stop)
    canvas.server = new
    started = time.monotonic()
    canvas.wait_js("() => window.midrun.store.connected", timeout=15_000)
    seconds = time.monotonic() - started
    (ARTIFACTS / "reconnect.txt").write_text(f"reconnected {seconds:.2f} s after the restart\n")
    assert seconds < 5
    canvas.page.wait_for_selector(".midrun-offline", state="detached")
    # Events flow again: a job another client queues shows up once, and completes.
    prompt = json.loads((EXAMPLES_DIR / "demo_txt2img.json").read_text())
    with httpx.Client(base_url=new.url, timeout=30) as http:
        job_id = http.post("/api/prompt", json={"prompt": prompt}).json()["prompt_id"]
        canvas.wait_js("(id) => window.midrun.store.jobs.get(id)?.state === 'completed'", job_id,
                       timeout=120_000)  # fmt: skip
        on_server = {j["id"] for j in http.get("/api/jobs").json()["jobs"]}
    canvas.page.wait_for_selector(f".midrun-job[data-job-id='{job_id}'][data-state='completed']")
    rows = canvas.js(
        "() => [...document.querySelectorAll('.midrun-job')].map((r) => r.dataset.jobId)")
    assert len(rows) == len(set(rows))
    assert set(rows) == on_server == {before, job_id}
