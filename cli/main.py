"""Entry point: ``caa-bake``."""

from __future__ import annotations

import sys

import typer

from caa_bake.core import CaaBakeError
from cli import (
    analyze_cmd,
    datasets_cmd,
    eval_cmd,
    export_cmd,
    extract_cmd,
    finetune_cmd,
    generate_cmd,
    models_cmd,
)

app = typer.Typer(
    name="caa-bake",
    help="Bake CAA steering vectors into standalone Hugging Face checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(datasets_cmd.app, name="datasets")
app.add_typer(models_cmd.app, name="models")
extract_cmd.register(app)
export_cmd.register(app)
eval_cmd.register(app)
finetune_cmd.register(app)
generate_cmd.register(app)
app.add_typer(analyze_cmd.app, name="analyze")


def main() -> None:
    """Run the app; user mistakes become one ``error:`` line and exit code 1."""
    try:
        app()
    except CaaBakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as exc:
        # Typer turns Ctrl-C into a bare exit 130 before the branch above can see it
        if exc.code == 130:
            print("error: interrupted", file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
