"""The engine served over HTTP: ``zsdseg serve`` and the client that talks to it.

The server adds transport, not a second implementation: a job runs the same
``run_volume`` with the same segmenter as a local run, so outputs are identical.
Importing this package is cheap; FastAPI, uvicorn and httpx are imported by the
modules that need them (install with ``pip install ".[server]"``).
"""
