"""The code index: chunking, embeddings, the vector store, incremental indexing and search.

Driven by the index activities and by `remedy index` / `remedy search` alike; importing it
loads no model and no Qdrant library (they load on first use).
"""
