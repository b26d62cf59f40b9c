"""The one error type stages report as a plain message instead of a traceback."""

import functools
import sys


class PipelineError(RuntimeError):
    """Bad input that the user can fix: the message names the problem and what to do."""


def exit_on_error(main):
    """Run a stage's `main`; a PipelineError ends it with the message and exit status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return wrapper
