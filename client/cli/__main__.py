"""`python -m client.cli`: the same as the `darkmatter` command."""
from client.cli import main

main()
