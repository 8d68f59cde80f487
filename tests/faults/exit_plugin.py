"""A plugin that calls exit(0) while it is imported: every command must treat that as a failure."""

raise SystemExit(0)
