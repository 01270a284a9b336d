"""The ``rbgeo`` command line: a thin shell over the Python API (one module per command group)."""

from __future__ import annotations

import sys
import traceback
import warnings

import click

from robustbench_geo._version import __version__
from robustbench_geo.cli.attack import attack
from robustbench_geo.cli.certify import certify
from robustbench_geo.cli.listing import list_group
from robustbench_geo.cli.options import as_click_error
from robustbench_geo.cli.report import report
from robustbench_geo.cli.results import results_group
from robustbench_geo.cli.sweep import sweep
from robustbench_geo.cli.train import evaluate, train


class OneLineErrors(click.Group):
    """The ``rbgeo`` group: a usage error (``--n abc``, an unknown command or choice, a missing argument) prints
    one ``Error:`` line that points at ``--help``, like every other error, instead of click's usage block. An error
    that ``--debug`` lets through prints its traceback and keeps the exit code of its message (2 or 1)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "rbgeo"
            valid = ""
            if e.ctx is not None and isinstance(e.ctx.command, click.Group) and "No such command" in e.format_message():
                valid = f" Valid commands: {', '.join(e.ctx.command.list_commands(e.ctx))}."
            click.echo(f"Error: {e.format_message()}{valid} (see '{where} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - an error --debug let through
            # the traceback, and the exit code its one-line message would have had (2: bad input, 1: environment)
            traceback.print_exc()
            sys.exit(as_click_error(e).exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)  # click.exceptions.Exit comes back as its code


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="rbgeo")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of a one-line message.")
def main(debug):
    """robustbench_geo: geometric adversarial robustness of image and graph models.

    Exit codes: 0 success, 2 bad input (names, values, paths), 1 environment (missing data, no GPU,
    corrupt files, permissions) or failed sweep cells.
    """
    quiet_library_warnings()


def quiet_library_warnings() -> None:
    """Keep other libraries' deprecation notices (FutureWarning, DeprecationWarning) out of the terminal.

    They tell this package's developers about an API change (torch_geometric's import, for one,
    triggers torch's ``torch.jit.script`` deprecation); a command-line user can do nothing about
    them. This package's own warnings, and every other category, still show. Sweep worker processes
    inherit these filters.
    """
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!robustbench_geo)")


main.add_command(train)
main.add_command(evaluate)
main.add_command(list_group)
main.add_command(attack)
main.add_command(certify)
main.add_command(sweep)
main.add_command(report)
main.add_command(results_group)

__all__ = ["main"]
