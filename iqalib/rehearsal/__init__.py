"""The user's online path, rehearsed offline: ``make rehearse`` (see :mod:`.run`)."""
