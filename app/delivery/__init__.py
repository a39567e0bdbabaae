"""Framework-free delivery core: MIME, DKIM signing, MX resolution, SMTP, classification.

Nothing here imports fastapi, arq or ORM session code (a test enforces it), so the same
functions serve the worker, the benchmarks and the tests.
"""
