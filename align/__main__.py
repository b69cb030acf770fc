"""`python -m align` behaves exactly like the `align` console script (distributed launchers need it)."""

from align.cli.main import main

if __name__ == "__main__":
    main()
