"""The verify page at ``/`` in headless Chromium (Debian's ``chromium``, driven by Playwright).

Upload two photos, press Verify, read the verdict, the numbers and the two aligned crops the page
shows, and compare them with the in-process recognizer; a screenshot goes to the test's tmp dir and,
when ``FACEFORGE_SCREENSHOT_DIR`` is set, there too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.mark.slow
def test_verify_page_in_headless_chromium(
    live_server, serve_recognizer, synth_png, serve_cfg, tmp_path
) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (install Debian's chromium package; .ci/run does it in CI)")
    sync_api = pytest.importorskip("playwright.sync_api")

    first = serve_cfg.first_id
    pairs = {
        "same": ((first, 0), (first, 1)),
        "different": ((first, 0), (first + 1, 1)),
    }
    paths = {}
    for key in {k for pair in pairs.values() for k in pair}:
        paths[key] = tmp_path / f"synth_{key[0]}_{key[1]}.png"
        paths[key].write_bytes(synth_png[key])
    h, w = serve_recognizer.face_cfg.input_size

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 820})
            page.goto(live_server.url + "/")
            assert page.title().startswith("faceforge")
            assert page.locator("#verify").is_disabled()  # nothing chosen yet
            # The service needs a key: first without it the page must show the 401 as an error.
            ka, kb = pairs["same"]
            page.set_input_files("#file-a", str(paths[ka]))
            page.set_input_files("#file-b", str(paths[kb]))
            page.click("#verify")
            page.wait_for_selector("#error", state="visible", timeout=30_000)
            assert "401" in page.inner_text("#error") and "X-API-Key" in page.inner_text("#error")

            page.fill("#api-key", serve_cfg.api_key)
            for name, (ka, kb) in pairs.items():
                page.set_input_files("#file-a", str(paths[ka]))
                page.set_input_files("#file-b", str(paths[kb]))
                page.click("#verify")
                want = serve_recognizer.verify(synth_png[ka], synth_png[kb])
                # ground truth of these two easy pairs (similarity far from the threshold either way)
                assert want["verified"] is (name == "same")
                verdict = "Same person" if name == "same" else "Different people"
                page.wait_for_function(
                    "v => document.getElementById('verdict').dataset.verified === v",
                    arg=str(want["verified"]).lower(),
                    timeout=60_000,
                )
                assert page.locator("#result").is_visible() and not page.locator("#error").is_visible()
                assert page.inner_text("#verdict") == verdict
                assert float(page.inner_text("#similarity")) == pytest.approx(want["similarity"], abs=1e-4)
                assert float(page.inner_text("#threshold-used")) == pytest.approx(want["threshold"], abs=1e-4)
                for side in ("a", "b"):
                    size = page.eval_on_selector(
                        f"#crop-{side}", "img => img.complete ? [img.naturalWidth, img.naturalHeight] : null"
                    )
                    assert size == [w, h], (side, size)  # the aligned crop the model saw, decoded
                shot = tmp_path / f"verify_page_{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                out_dir = os.environ.get("FACEFORGE_SCREENSHOT_DIR")
                if out_dir:
                    Path(out_dir).mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, Path(out_dir) / shot.name)
        finally:
            browser.close()
