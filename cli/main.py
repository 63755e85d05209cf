"""The `castkeep` command line. Commands are imported only when run, so `castkeep analyze` never
imports torch and `castkeep --help` stays fast."""

from __future__ import annotations

import importlib
import os
import sys

import click

from .. import __version__
from ..errors import CastkeepError
from .common import quiet_library_warnings, quiet_native_logs, terminal_text

# command name → "module:attribute" inside castkeep.cli
COMMANDS = {
    "analyze": "analyze:analyze",
    "compare": "compare:compare",
    "doctor": "doctor:doctor",
    "register": "store_commands:register",
    "add-refs": "store_commands:add_refs",
    "list": "store_commands:list_characters",
    "show": "store_commands:show",
    "remove": "store_commands:remove",
    "identify": "store_commands:identify",
    "score": "store_commands:score",
    "export": "store_commands:export",
    "import": "store_commands:import_character",
    "verify": "store_commands:verify",
    "reembed": "store_commands:reembed",
    "store": "store_group:store",
    "generate": "generate:generate",
    "storyboard": "storyboard:storyboard",
    "fix-face": "edits:fix_face",
    "edit": "edits:edit",
    "outpaint": "edits:outpaint",
    "upscale": "edits:upscale",
    "inspect": "inspect:inspect",
    "bench": "bench:bench",
    "serve": "serve:serve",
}


class LazyGroup(click.Group):
    """click's documented lazy-loading pattern: resolve a command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attribute = COMMANDS[name].split(":")
            try:
                module = importlib.import_module(f"{__package__}.{module_name}")
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith(f"{__package__}."):
                    return None  # command not built yet
                raise
            return getattr(module, attribute, None)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="castkeep")
def cli() -> None:
    """castkeep: keep a character's face the same across AI-generated images.

    Register a character from reference photos, generate images conditioned on its identity,
    and score every output against it.
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: bad input ends in one line on stderr and a non-zero exit code."""
    quiet_native_logs()
    quiet_library_warnings()
    try:
        cli.main(args=argv, prog_name="castkeep", standalone_mode=False)
    except CastkeepError as exc:
        click.echo(f"error: {terminal_text(str(exc), one_line=True)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("CASTKEEP_DEBUG"):
            raise
        message = terminal_text(" ".join(str(exc).split()), one_line=True) or type(exc).__name__
        click.echo(f"error: internal error ({type(exc).__name__}: {message}); "
                   f"rerun with CASTKEEP_DEBUG=1 for the traceback", err=True)
        sys.exit(70)
    sys.exit(0)


if __name__ == "__main__":
    main()
