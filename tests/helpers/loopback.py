"""One HTTP client for the tests that call a server on loopback.

httpx's top-level functions (`httpx.get`, `httpx.post`, ...) make a new client for every call,
and making one builds a TLS context with the CA bundle loaded: about 55 ms of CPU, never used
on plain HTTP to 127.0.0.1, and more than a request to the tiny model's server costs. This
client is made once. It keeps no connection alive, so each request opens a connection of its
own and closes it, as the top-level functions do (a test of a limit or of a server's restart
sees no pooled connection). Its cookie jar stays empty: the server sets no cookies. httpx's
clients can be shared between threads.
"""

import httpx

http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
