"""Git plumbing: one runner, the mirror cache, evidence from history, diffs of edited files."""
