"""Load testing of the translation service, shared by tuning/ and bench/.

    load.py     `translator load`: the load generator (closed or open loop, length mix, /metrics deltas)
    server.py   `translator serve` in a subprocess on a free 127.0.0.1 port (LocalServer)
    scrape.py   the server's view of a run: /metrics before and after, as deltas
    corpus.py   what is sent: sentences of a corpus, token counts, length mixes, texts of a given length

Serving-side only: nothing here imports torch, matplotlib or the service package (it talks to the
service over HTTP).
"""
