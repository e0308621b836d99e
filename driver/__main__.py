"""`python -m driver --algo mnpo`: see driver/cli.py."""

from driver.cli import main

if __name__ == "__main__":
    main()
