"""The leaderboard, regenerated from stored results alone (``pdbench leaderboard``).

``data`` turns result records into one :class:`~leaderboard.data.Board` (means with bootstrap intervals,
Wilson success rates, rank bands); ``markdown``, ``latex``, ``csv_tables``, ``html_page`` and ``figures``
render it; ``build`` writes every artefact. The committed results live in ``results/``.
"""
