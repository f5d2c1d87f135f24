"""`remedy watch` without its HTTP: log records into error events, and files followed durably."""
