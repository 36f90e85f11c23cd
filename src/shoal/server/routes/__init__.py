"""The app's routers: one per area, each with its prefix and tags, combined in :mod:`.api`."""
