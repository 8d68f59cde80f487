"""One module per ``pdbench`` verb. Each defines ``add_parser(subparsers, common)`` that adds its
sub-command and sets ``fn`` to the function that runs it; ``benchmark.cli`` discovers them in this order."""

ORDER = ["list", "run", "leaderboard"]  # verbs not listed here follow in alphabetical order
