"""Everything that starts or talks to workflows: the HTTP intake, Slack listeners and the CLI."""
