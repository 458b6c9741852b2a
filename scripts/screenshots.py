"""Take the README screenshots from the real app: a real short training, a prediction, a comparison.

    python scripts/screenshots.py [--data /work/shared/data/pokemon] [--epochs 2] [--out docs/screenshots]

Launches the app in-process on a free port with a throw-away checkpoint folder, drives Debian's Chromium with
Playwright and writes doctor.png, train.png, errors.png, predict.png, gradcam.png and (unless
--skip-compare) compare.png. Takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TRAINING_TIMEOUT_MS = 20 * 60 * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def a_test_image(run_dir: Path, data: Path, wanted: str = "pikachu") -> Path:
    """An image the model never trained on (from its recorded test split), preferably of ``wanted``."""
    split = json.loads((run_dir / "config.json").read_text())["split"]
    tests = [item for item in split if item["split"] == "test"]
    chosen = next((item for item in tests if item["label"] == wanted), tests[0])
    return data / chosen["path"]


def close_toasts(page) -> None:
    """Info toasts ("Training finished ...") would cover part of the picture."""
    for button in page.locator(".toast-close").all():
        if button.is_visible():
            button.click()
    page.wait_for_timeout(500)


def clip_around(page, selectors: list[str], pad: int = 12) -> dict[str, float]:
    """The page region that holds all the given elements (for a screenshot of one panel)."""
    page.locator(selectors[0]).first.scroll_into_view_if_needed()
    scroll_y = page.evaluate("window.scrollY")  # bounding boxes are in viewport coordinates; clips in page ones
    boxes = [page.locator(sel).first.bounding_box() for sel in selectors]
    boxes = [{**b, "y": b["y"] + scroll_y} for b in boxes]
    left, top = min(b["x"] for b in boxes) - pad, min(b["y"] for b in boxes) - pad
    right = max(b["x"] + b["width"] for b in boxes) + pad
    bottom = max(b["y"] + b["height"] for b in boxes) + pad
    return {"x": max(left, 0), "y": max(top, 0), "width": right - max(left, 0), "height": bottom - max(top, 0)}


def shoot_doctor(page, out: Path) -> None:
    from playwright.sync_api import expect

    page.locator("#doctor").get_by_text("Dataset doctor").first.click()
    expect(page.locator("#doctor-report")).to_contain_text("images in", timeout=120_000)
    page.wait_for_timeout(1000)
    page.locator("#doctor").screenshot(path=str(out / "doctor.png"))
    page.locator("#doctor").get_by_text("Dataset doctor").first.click()  # closed again for train.png


def shoot(url: str, data: Path, runs: Path, epochs: int, out: Path, chromium: str, compare: bool = True) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
        page.goto(url)
        expect(page.get_by_text("classes ·").first).to_be_visible(timeout=60_000)
        backbone = page.get_by_role("combobox", name="Backbone (the network)")
        expect(backbone).to_have_value(re.compile("efficientnet_lite0.*bundled"), timeout=60_000)
        shoot_doctor(page, out)
        epochs_box = page.locator("#epochs input[type=number]")
        epochs_box.fill(str(epochs))
        epochs_box.press("Enter")
        page.get_by_role("button", name="▶ Train", exact=True).click()
        expect(page.locator("#train-results")).to_contain_text("Test accuracy", timeout=TRAINING_TIMEOUT_MS)
        page.wait_for_timeout(1500)  # let the plots finish drawing
        close_toasts(page)
        page.screenshot(path=str(out / "train.png"), full_page=True)
        page.screenshot(path=str(out / "errors.png"), full_page=True,
                        clip=clip_around(page, ["#errors-caption", "#errors"]))

        page.get_by_role("tab", name="② Predict").click()
        run_dir = max((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
        page.locator("#predict-image input[type=file]").set_input_files(str(a_test_image(run_dir, data)))
        expect(page.locator("#predict-label")).to_contain_text("%", timeout=60_000)
        expect(page.locator("#cam-caption")).to_contain_text("Where the model", timeout=60_000)
        page.wait_for_timeout(1200)
        close_toasts(page)
        page.screenshot(path=str(out / "predict.png"), full_page=True)
        page.screenshot(path=str(out / "gradcam.png"), full_page=True,
                        clip=clip_around(page, ["#predict-image", "#predict-label", "#cam-caption", "#cam-image"]))
        if not compare:
            browser.close()
            return

        page.get_by_role("tab", name="③ Compare").click()
        page.get_by_role("button", name="▶ Train both and compare").click()
        expect(page.locator("#compare-summary")).to_contain_text("vs scratch", timeout=2 * TRAINING_TIMEOUT_MS)
        page.get_by_role("button", name="Evaluate both").click()
        expect(page.locator("#eval-caption")).to_contain_text("test images", timeout=120_000)
        page.wait_for_timeout(1500)
        close_toasts(page)
        page.screenshot(path=str(out / "compare.png"), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("POKEDEMO_DATA", "/work/shared/data/pokemon"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--skip-compare", action="store_true", help="leave compare.png as it is (saves minutes)")
    args = parser.parse_args()
    from pokedemo.app import layout

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pokedemo-shots-") as runs:
        demo = layout.build_demo(checkpoint_root=runs, data_dir=args.data)
        port = free_port()
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                    **layout.launch_options())
        try:
            shoot(f"http://127.0.0.1:{port}/", Path(args.data), Path(runs), args.epochs, out, args.chromium,
                  compare=not args.skip_compare)
        finally:
            demo.close()
    print(f"wrote {', '.join(str(p) for p in sorted(out.glob('*.png')))}")


if __name__ == "__main__":
    main()
