"""`python -m taskctl ...` is `taskctl ...`."""

from taskctl.main import main

if __name__ == "__main__":
    main()
