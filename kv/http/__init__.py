"""The HTTP layer, one concept per module:

- negotiation: media types of values, Accept and If-None-Match;
- problems: RFC 9457 problem responses;
- state: what one worker serves (table, counters, limits, readiness);
- handlers: what each route answers, as plain functions;
- openapi: the OpenAPI description, as data;
- routes: the one table of routes, which everything else reads;
- throttle: /metrics and /v1/stats rendered at a bounded rate;
- fastpath: the ASGI fast path for hits, and the size limits;
- app: create_app, the FastAPI app built from the table behind the fast path.
"""
