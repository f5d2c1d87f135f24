"""Pure rendering: incident data in, Slack blocks, pull-request text and terminal text out."""
