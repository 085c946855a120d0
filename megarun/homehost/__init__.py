"""The home host: the area's context, its working database, mirror, hand-off and cron."""
