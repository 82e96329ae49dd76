"""The rooms of `vitsearch serve` below its routes (``vitsearch.server``).

``batcher``  the micro-batcher that lets concurrent requests share model and store calls
``guards``   HTTP guards: body size and stall limits, the request-head timeout
``auth``     API keys: which routes need one, and the check (a FastAPI dependency)
``cors``     cross-origin requests from the origins given
``metrics``  Prometheus instruments, and the middleware that measures and logs every request
``logs``     the access log and the server's other log lines, as text or JSON lines
``run``      uvicorn with a graceful shutdown on SIGTERM / SIGINT
``errors``   ``ApiError`` (defined in vitsearch.errors): an error that answers with an HTTP status
"""
