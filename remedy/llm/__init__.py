"""The model conversation, one concern per module; the backends' I/O lives in activities/.

conversation (messages, the backend protocol), prompts, answers (shape, parsing, checks),
routing, pricing, session (cache, usage, caps), agent (the tool loop), repo_tools.
"""
