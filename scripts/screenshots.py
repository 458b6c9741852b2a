"""Take the README screenshots from the real app, as a newcomer meets it, then after a real short training.

    python scripts/screenshots.py [--data DIR] [--epochs 2] [--out docs/screenshots] [--skip-train]

Launches the app in-process on a free port with a throw-away checkpoint folder (so the starter model is the
only model at first), drives Debian's Chromium with Playwright and writes: first.png (the first screen: the
bundled dataset prefilled and summarised), doctor.png, predict.png and gradcam.png (an example from the
starter's test split, predicted by the starter), compare.png (the recorded comparison), then, unless
--skip-train, train.png and errors.png after a real training. Takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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


def shoot_first_screen(page, out: Path) -> None:
    """What a newcomer sees on opening the app: the Train tab with the bundled dataset already summarised."""
    from playwright.sync_api import expect

    expect(page.get_by_text("classes ·").first).to_be_visible(timeout=120_000)
    backbone = page.get_by_role("combobox", name="Backbone (the network)")
    expect(backbone).to_have_value(re.compile("efficientnet_lite0.*bundled"), timeout=120_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out / "first.png"))  # the viewport: exactly the first screen


def shoot_starter_prediction(page, out: Path) -> None:
    """One click on an example (from the starter's test split): the starter's top 5 and its Grad-CAM."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="② Predict").click()
    examples = page.locator("#predict-examples")
    expect(examples).to_be_visible(timeout=60_000)
    examples.locator("img[src*='pikachu-']").first.click()  # example files are named <class>-<file>
    expect(page.locator("#predict-label")).to_contain_text("%", timeout=120_000)
    expect(page.locator("#cam-caption")).to_contain_text("Where the model", timeout=120_000)
    page.wait_for_timeout(1200)
    close_toasts(page)
    page.screenshot(path=str(out / "predict.png"), full_page=True)
    page.screenshot(path=str(out / "gradcam.png"), full_page=True,
                    clip=clip_around(page, ["#predict-image", "#predict-label", "#cam-caption", "#cam-image"]))


def shoot_recorded_comparison(page, out: Path) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="③ Compare").click()
    expect(page.locator("#compare-summary")).to_contain_text("Recorded result", timeout=60_000)
    page.wait_for_timeout(1500)  # let the plots draw
    page.screenshot(path=str(out / "compare.png"), full_page=True)


def shoot_training(page, out: Path, epochs: int) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="① Train").click()
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


def shoot(url: str, out: Path, chromium: str, epochs: int, train: bool = True) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
        page.goto(url)
        shoot_first_screen(page, out)
        shoot_doctor(page, out)
        shoot_starter_prediction(page, out)
        shoot_recorded_comparison(page, out)
        if train:
            shoot_training(page, out, epochs)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset (default: as the app, the bundled data/pokemon)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--skip-train", action="store_true", help="leave train.png and errors.png as they are")
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
            shoot(f"http://127.0.0.1:{port}/", out, args.chromium, args.epochs, train=not args.skip_train)
        finally:
            demo.close()
    print(f"wrote {', '.join(str(p) for p in sorted(out.glob('*.png')))}")


if __name__ == "__main__":
    main()
