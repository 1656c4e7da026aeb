"""The HTTP layer: thin handlers (parse, call one work function, respond), one route table
(routes.py), and the one place errors become responses (responses.py)."""
