"""``python -m lumin_inferno.fanout.member TASK.pkl``: train one pickled :class:`~lumin_inferno.fanout.MemberTask`
in this (fresh) process. Exit status 0 once the member is on disk."""

import pickle
import sys


def main() -> int:
    from .._compat import import_lumin

    import_lumin()
    from .training import train_member

    with open(sys.argv[1], "rb") as f:
        task = pickle.load(f)
    train_member(task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
