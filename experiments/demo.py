"""`make demo`: TTRL on a built-in synthetic task (issue 7, not yet implemented)."""

import sys


def main() -> int:
    print(
        "make demo: not yet implemented (the TTRL demo lands with the trainer and demo "
        "issues); `make test` runs the test suite."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
