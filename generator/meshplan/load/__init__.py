"""Stage 1 — load, in parts: :mod:`.files` finds and reads input files safely, :mod:`.parse`
turns their text into :mod:`.document` records with positions, :mod:`.repository` does both
for a repository's ``inventory/`` and ``requirements/``. Nothing here knows what a Domain or
a Requirement is."""
