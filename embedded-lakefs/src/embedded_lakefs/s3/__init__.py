"""lakeFS' S3 gateway: ``s3://<repository>/<ref>/<path>`` with SigV4 and the lakeFS keys, on the API's port."""

from .gateway import S3Gateway

__all__ = ["S3Gateway"]
