"""The `emokit` command line: thin commands that parse, call the library, print a summary."""

from __future__ import annotations

import os

import typer

# Older MediaPipe builds log through glog, TensorFlow through its own logger: quiet both from the
# start. MediaPipe 0.10's absl and TFLite's own lines ignore these; see emokit.native_logs.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    name="emokit",
    help="Audio-driven portrait video (EMO): build datasets, train, generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from emokit import __version__

        typer.echo(f"emokit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audio-driven portrait video (EMO): ingest -> label -> train -> generate."""
    from emokit.native_logs import filter_native_logs

    filter_native_logs()  # MediaPipe/TFLite native log lines stay off the terminal


# Each command lives in its own module and registers itself on `app`, in pipeline order.
from emokit.cli import ingest as _ingest  # noqa: E402,F401
from emokit.cli import label as _label  # noqa: E402,F401
from emokit.cli import inspect as _inspect  # noqa: E402,F401
from emokit.cli import train as _train  # noqa: E402,F401
from emokit.cli import generate as _generate  # noqa: E402,F401
from emokit.cli import evaluate as _evaluate  # noqa: E402,F401
