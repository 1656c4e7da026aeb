"""The embedded stack behind `make run` and the tests: PostgreSQL and S3 on 127.0.0.1."""
