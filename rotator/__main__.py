"""``python -m rotator`` runs the CLI."""

from rotator.cli import main

main()
