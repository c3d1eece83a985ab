"""`python -m aibudget` runs the CLI."""

from aibudget.cli import main

main()
