"""The one error path of the project's command lines.

A user's mistake (a bad flag, a missing or unreadable file, a config that cannot run) is raised
as a UserError whose message names the flag or file at fault; `command_line` turns it into one
line on stderr and exit status 2, never a traceback. Anything else is a bug and keeps its
traceback. Ctrl-C outside the places that handle it prints one line and exits with 130.
"""
import functools
import sys


class UserError(Exception):
    """A mistake in the user's input, reported as one line naming the flag or file at fault."""


# A missing optional package (torch for a converter, say) is the user's set-up, not a bug.
USER_ERRORS = (UserError, FileNotFoundError, ModuleNotFoundError)


def command_line(main):
    """Wrap main(args) -> exit status (None is 0) into a command-line entry point; args are the
    command-line arguments without the program name (sys.argv[1:] when run(None)). The process
    exits with a non-zero status; a zero status returns."""

    @functools.wraps(main)
    def run(argv=None):
        try:
            status = main(sys.argv[1:] if argv is None else list(argv))
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        if status:
            sys.exit(status)

    return run
