"""The launchers' shared entry point: absl's `app.run` with one-line errors."""

import sys

from absl import app


def run_main(main, errors: tuple[type[BaseException], ...]) -> None:
    """Runs ``app.run(main)``; an exception of a type in ``errors`` (a bad path, flag or
    value) becomes one ``error: ...`` line on stderr (its message's first line) and exit
    status 2, instead of a traceback."""
    try:
        app.run(main)
    except errors as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        sys.exit(2)
