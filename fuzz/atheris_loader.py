# ruff: noqa: INP001 - a script, not a package
"""
Coverage-guided fuzzing of the policy loader with atheris (not run in CI).

Each input is split into a format byte and a text; the loader must return a
Policy or raise PolicyError, and nothing else.  See fuzz/README.md.
"""

import sys

import atheris


with atheris.instrument_imports():
    import referee

FORMATS = ("yaml", "toml", "json")


def test_one_input(data: bytes) -> None:
    """
    Load *data* as a policy; anything but a Policy or a PolicyError is a
    crash for atheris to report.
    """
    fdp = atheris.FuzzedDataProvider(data)
    fmt = FORMATS[fdp.ConsumeIntInRange(0, len(FORMATS) - 1)]
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        policy = referee.load_policy_text(text, fmt=fmt)
    except referee.PolicyError:
        return
    if not isinstance(policy, referee.Policy):
        msg = f"load_policy_text returned {policy!r}"
        raise TypeError(msg)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
