"""The launchers' shared entry point: absl's `app.run` with one-line errors.

Every error a user can cause (a bad path, flag, config key or value, an unreadable
checkpoint) ends the launcher with one ``error: ...`` line on stderr and a non-zero
exit status. ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import app, flags

flags.DEFINE_bool("verbose", False, "On an error, show its full traceback.")


def _verbose(argv: Sequence[str]) -> bool:
    if flags.FLAGS.is_parsed():
        return flags.FLAGS.verbose
    return any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv)


def error_line(e: BaseException) -> str:
    """The first line of an error's message (a KeyError's text, not its repr)."""
    while isinstance(e, AttributeError | KeyError) and e.args and isinstance(e.args[0], KeyError):
        e = e.args[0]  # ml_collections wraps a KeyError in an AttributeError
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str):
        text = e.args[0]
    else:
        text = str(e)
    text = text.strip()
    return text.splitlines()[0] if text else type(e).__name__


def _quiet_unraisable(info) -> None:
    """Drops tensorstore's late callbacks into an event loop that orbax already closed
    (after a failed restore: reads still in flight finish later); they are noise, not
    errors. Anything else goes to Python's default hook."""
    exc = info.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
    sys.__unraisablehook__(info)


def run_main(
    main,
    errors: tuple[type[BaseException], ...],
    argv_check: Callable[[Sequence[str]], None] | None = None,
) -> None:
    """Runs ``app.run(main)``; an exception of a type in ``errors`` (a bad path, flag or
    value) becomes one ``error: ...`` line on stderr (its message's first line) and exit
    status 2, instead of a traceback; any other exception one line and exit status 1.
    ``--verbose`` re-raises instead.

    Args:
      main: the absl main function.
      errors: the exception types that a user's input causes.
      argv_check: called with ``sys.argv`` before flag parsing; raises ``ValueError``
        (e.g. `check_config_argv`).
    """
    argv = list(sys.argv)
    if not _verbose(argv):
        sys.unraisablehook = _quiet_unraisable
    try:
        if argv_check is not None:
            argv_check(argv)
        app.run(main)
    except SystemExit:
        raise
    except errors as e:
        if _verbose(argv):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if _verbose(argv):
            raise
        last = traceback.extract_tb(e.__traceback__)[-1:]
        where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
        print(
            f"error: {type(e).__name__}: {error_line(e)}{where} (--verbose shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


def check_step(step: str) -> str:
    """A ``--step`` value: a number, 'latest' or 'best' (ValueError otherwise)."""
    if step in ("latest", "best") or step.isdigit():
        return step
    raise ValueError(f"--step={step}: expected a step number, 'latest' or 'best'")


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name=V`` / ``--name V``; the last one wins, as in absl."""
    value = None
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def load_config_file(spec: str):
    """The ConfigDict of a preset ``path[:arg]``, as ml_collections' config flag loads it."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"--config={spec}: no such file")
    module_spec = importlib.util.spec_from_file_location("_ttrl_preset", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config={spec}: the file defines no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def check_config_argv(argv: Sequence[str], name: str = "config") -> None:
    """Checks ``--config=FILE`` and every ``--config.a.b=...`` override's key.

    Raises:
      ValueError: ``config.a.b: unknown key (did you mean c?)`` or a missing file.
    """
    import ml_collections

    spec = _flag_value(argv, name)
    if spec is None:
        return  # absl reports the missing required flag
    cfg = load_config_file(spec)
    prefixes = (f"--{name}.", f"--no{name}.")
    for a in argv:
        if not a.startswith(prefixes):
            continue
        dotted = a.split("=", 1)[0][
            len(prefixes[0] if a.startswith(prefixes[0]) else prefixes[1]) :
        ]
        node, seen = cfg, name
        for part in dotted.split("."):
            if "[" in part or not isinstance(node, ml_collections.ConfigDict):
                break  # list indices and plain values: ml_collections checks them
            if part not in node:
                close = difflib.get_close_matches(part, list(node.keys()), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"{seen}.{part}: unknown key{hint}")
            node, seen = node[part], f"{seen}.{part}"
