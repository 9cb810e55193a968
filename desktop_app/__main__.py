"""``python -m desktop_app [IMAGE]`` and the ``pconv-studio`` entry point."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from desktop_app import APP_NAME, ORGANIZATION, app_version


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pconv-studio",
        description=f"{APP_NAME}: paint a hole on a photo and fill it with a "
                    "partial-convolution U-Net.")
    parser.add_argument("image", nargs="?", help="a photo to open")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="model or checkpoint file (default: the shipped model)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="where the network runs (default: the saved setting, auto)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="network precision (default auto: bfloat16 on CPUs that compute "
                             "it natively, else float32)")
    parser.add_argument("--self-test", action="store_true",
                        help="offscreen check: inpaint the bundled sample and exit 0 or 1")
    parser.add_argument("--version", action="version", version=f"%(prog)s {app_version()}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.self_test:
        from desktop_app.selftest import run_self_test

        return run_self_test(args.checkpoint, args.device or "auto", precision=args.precision)

    from PySide6.QtWidgets import QApplication

    from desktop_app.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationVersion(app_version())
    window = MainWindow(checkpoint=args.checkpoint, device=args.device, precision=args.precision)
    _install_excepthook(window)
    error: BaseException | None = None
    code = 1
    try:
        window.show()
        if args.image:
            window.open_path(Path(args.image))
        code = int(app.exec())
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the worker stops
        error = exc
    if not window.shutdown():  # also when the event loop ends without a close event
        # A long network pass is still running in the worker thread. Letting Python tear
        # down the QThread under it would abort the process with a core dump; settings are
        # saved and the worker writes no files, so leave at once instead.
        if error is not None:
            traceback.print_exception(error)
        print("note: exiting while a network pass was still running", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if error is None else 1)
    if error is not None:
        raise error
    return code


def _install_excepthook(window) -> None:
    """An unexpected error in a slot becomes a dialog instead of a silent stack trace."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb) -> None:
        traceback.print_exception(exc_type, exc, tb)
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
            return
        try:
            window.show_error("Unexpected Error",
                              f"{exc_type.__name__}: {exc}\n\nThe app keeps running; "
                              "details were printed to the terminal.")
        except Exception:  # noqa: BLE001 - never raise from the hook itself
            pass

    sys.excepthook = hook


if __name__ == "__main__":
    sys.exit(main())
