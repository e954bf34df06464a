"""The `s3_env` fixture (a real S3 API: moto's server on 127.0.0.1) is in tests/conftest.py: the
deployment tests use it too."""
