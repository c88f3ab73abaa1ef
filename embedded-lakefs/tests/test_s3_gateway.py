"""The S3 gateway through boto3 and plain HTTP: objects, listings, conditional and ranged reads, copies, deletes,
multipart uploads, refs (writes to branches only) and SigV4 (header, presigned, wrong keys)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import os
import uuid

import boto3
import lakefs_sdk
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from lakefs_sdk.client import LakeFSClient

MB = 1 << 20


def s3_client(target, secret: str | None = None, key_id: str | None = None):
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint,
        aws_access_key_id=key_id or target.access_key_id,
        aws_secret_access_key=secret or target.secret_access_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def s3(contract_target):
    return s3_client(contract_target)


@pytest.fixture(scope="module")
def sdk(contract_target) -> LakeFSClient:
    configuration = lakefs_sdk.Configuration(
        host=contract_target.api_url, username=contract_target.access_key_id, password=contract_target.secret_access_key
    )
    return LakeFSClient(configuration)


@pytest.fixture
def repo(sdk) -> str:
    name = f"s3-{uuid.uuid4().hex[:10]}"
    sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}", default_branch="main")
    )
    yield name
    sdk.repositories_api.delete_repository(name)


def error_code(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_put_get_head_and_list_buckets(s3, repo):
    put = s3.put_object(Bucket=repo, Key="main/dir/a b.txt", Body=b"hello", ContentType="text/plain",
                        Metadata={"owner": "me"})  # fmt: skip
    assert put["ETag"] == f'"{hashlib.md5(b"hello").hexdigest()}"'
    got = s3.get_object(Bucket=repo, Key="main/dir/a b.txt")
    assert got["Body"].read() == b"hello"
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"owner": "me"} and got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=repo, Key="main/dir/a b.txt")
    assert head["ContentLength"] == 5 and head["ETag"] == put["ETag"]
    assert repo in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=repo)
    assert s3.get_bucket_location(Bucket=repo)["LocationConstraint"] in (None, "us-east-1")


def test_missing_things_are_s3_errors(s3, repo, contract_target):
    assert error_code(s3.get_object, Bucket=repo, Key="main/nope") == (404, "NoSuchKey")
    assert error_code(s3.get_object, Bucket="no-such-repo-x", Key="main/nope") == (404, "NoSuchBucket")
    response = requests.get(f"{contract_target.endpoint}/{repo}/main/nope", timeout=30)
    assert response.status_code == 403 and b"<Code>AccessDenied</Code>" in response.content  # unsigned


def test_ranged_and_conditional_get(s3, repo):
    data = bytes(range(256)) * 4
    etag = s3.put_object(Bucket=repo, Key="main/r.bin", Body=data)["ETag"]
    assert s3.get_object(Bucket=repo, Key="main/r.bin", Range="bytes=10-19")["Body"].read() == data[10:20]
    assert s3.get_object(Bucket=repo, Key="main/r.bin", Range="bytes=-5")["Body"].read() == data[-5:]
    assert error_code(s3.get_object, Bucket=repo, Key="main/r.bin", Range="bytes=5000-") == (416, "InvalidRange")
    assert error_code(s3.get_object, Bucket=repo, Key="main/r.bin", IfNoneMatch=etag)[0] == 304
    assert error_code(s3.get_object, Bucket=repo, Key="main/r.bin", IfMatch='"0000"') == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=repo, Key="main/r.bin", IfMatch=etag)["Body"].read() == data
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
    assert error_code(s3.get_object, Bucket=repo, Key="main/r.bin", IfModifiedSince=later)[0] == 304
    earlier = later - datetime.timedelta(hours=1)
    assert s3.get_object(Bucket=repo, Key="main/r.bin", IfModifiedSince=earlier)["Body"].read() == data


def test_list_v2_with_delimiter_and_continuation(s3, repo, sdk):
    keys = [f"main/d/{i:03d}" for i in range(25)] + ["main/d/sub/x", "main/d/sub/y", "main/top"]
    for key in keys:
        s3.put_object(Bucket=repo, Key=key, Body=key.encode())
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="dev", source="main"))
    seen, prefixes, token, pages = [], [], None, 0
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=repo, Prefix="main/d/", Delimiter="/", MaxKeys=7, **kwargs)
        pages += 1
        seen += [item["Key"] for item in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == [f"main/d/{i:03d}" for i in range(25)] and prefixes == ["main/d/sub/"] and pages == 4
    everything = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=repo, Prefix="main/")
                  for o in p.get("Contents", [])]  # fmt: skip
    assert everything == sorted(keys)
    after = s3.list_objects_v2(Bucket=repo, Prefix="main/", StartAfter="main/d/024")["Contents"]
    assert [o["Key"] for o in after] == ["main/d/sub/x", "main/d/sub/y", "main/top"]
    branches = s3.list_objects_v2(Bucket=repo, Delimiter="/")["CommonPrefixes"]
    assert [p["Prefix"] for p in branches] == ["dev/", "main/"]
    v1 = s3.list_objects(Bucket=repo, Prefix="main/d/sub/")
    assert [o["Key"] for o in v1["Contents"]] == ["main/d/sub/x", "main/d/sub/y"]


def test_copy_and_deletes(s3, repo):
    s3.put_object(Bucket=repo, Key="main/src", Body=b"payload", Metadata={"k": "v"})
    s3.copy_object(Bucket=repo, Key="main/dst", CopySource={"Bucket": repo, "Key": "main/src"})
    copied = s3.get_object(Bucket=repo, Key="main/dst")
    assert copied["Body"].read() == b"payload" and copied["Metadata"] == {"k": "v"}
    s3.delete_object(Bucket=repo, Key="main/src")
    assert error_code(s3.head_object, Bucket=repo, Key="main/src")[0] == 404
    for i in range(3):
        s3.put_object(Bucket=repo, Key=f"main/many/{i}", Body=b"x")
    result = s3.delete_objects(
        Bucket=repo, Delete={"Objects": [{"Key": f"main/many/{i}"} for i in range(3)] + [{"Key": "main/absent"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["main/absent", "main/many/0", "main/many/1", "main/many/2"]
    assert s3.list_objects_v2(Bucket=repo, Prefix="main/many/")["KeyCount"] == 0


def test_multipart_upload_of_20_mb(s3, repo):
    data = os.urandom(20 * MB)
    config = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=4)
    s3.upload_fileobj(io.BytesIO(data), repo, "main/big.bin", Config=config)
    head = s3.head_object(Bucket=repo, Key="main/big.bin")
    part_md5s = b"".join(hashlib.md5(data[i : i + 5 * MB]).digest() for i in range(0, len(data), 5 * MB))
    assert head["ETag"] == f'"{hashlib.md5(part_md5s).hexdigest()}-4"' and head["ContentLength"] == len(data)
    out = io.BytesIO()
    s3.download_fileobj(repo, "main/big.bin", out, Config=config)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()


def test_multipart_parts_listed_aborted_and_checked(s3, repo):
    upload = s3.create_multipart_upload(Bucket=repo, Key="main/mp")["UploadId"]
    small = s3.upload_part(Bucket=repo, Key="main/mp", UploadId=upload, PartNumber=1, Body=b"a" * 100)["ETag"]
    s3.upload_part(Bucket=repo, Key="main/mp", UploadId=upload, PartNumber=2, Body=b"b" * 100)
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=repo, Key="main/mp", UploadId=upload)["Parts"]] == [1, 2]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=repo)["Uploads"]] == [upload]
    parts = {"Parts": [{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}]}
    complete = s3.complete_multipart_upload
    assert error_code(complete, Bucket=repo, Key="main/mp", UploadId=upload, MultipartUpload=parts)[1] == "InvalidPart"
    parts["Parts"][1]["ETag"] = f'"{hashlib.md5(b"b" * 100).hexdigest()}"'
    assert error_code(complete, Bucket=repo, Key="main/mp", UploadId=upload, MultipartUpload=parts) == (
        400,
        "EntityTooSmall",
    )
    s3.abort_multipart_upload(Bucket=repo, Key="main/mp", UploadId=upload)
    assert error_code(s3.list_parts, Bucket=repo, Key="main/mp", UploadId=upload) == (404, "NoSuchUpload")


def test_read_by_commit_id_and_write_to_commit_refused(s3, repo, sdk):
    s3.put_object(Bucket=repo, Key="main/data.txt", Body=b"v1")
    commit = sdk.commits_api.commit(repo, "main", lakefs_sdk.CommitCreation(message="v1")).id
    s3.put_object(Bucket=repo, Key="main/data.txt", Body=b"v2")
    assert s3.get_object(Bucket=repo, Key=f"{commit}/data.txt")["Body"].read() == b"v1"
    assert s3.get_object(Bucket=repo, Key="main@/data.txt")["Body"].read() == b"v1"  # committed head
    assert s3.get_object(Bucket=repo, Key="main/data.txt")["Body"].read() == b"v2"
    assert error_code(s3.put_object, Bucket=repo, Key=f"{commit}/data.txt", Body=b"x") == (404, "NoSuchBucket")
    sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="v1", ref=commit))
    assert s3.get_object(Bucket=repo, Key="v1/data.txt")["Body"].read() == b"v1"
    assert error_code(s3.delete_object, Bucket=repo, Key="v1/data.txt") == (404, "NoSuchBucket")
    assert s3.list_objects_v2(Bucket=repo, Prefix=f"{commit}/")["Contents"][0]["Key"] == f"{commit}/data.txt"


@pytest.mark.parametrize("version", ["s3", "s3v4"])  # boto3's default presigns with V2
def test_presigned_get_and_tampering(contract_target, repo, version):
    s3 = boto3.client(
        "s3",
        endpoint_url=contract_target.endpoint,
        aws_access_key_id=contract_target.access_key_id,
        aws_secret_access_key=contract_target.secret_access_key,
        region_name="us-east-1",
        config=Config(signature_version=version),
    )
    s3.put_object(Bucket=repo, Key="main/p.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": repo, "Key": "main/p.txt"}, ExpiresIn=60)
    assert requests.get(url, timeout=30).content == b"presigned"
    head, signature = url.rsplit("Signature=", 1)
    tampered = f"{head}Signature={'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    response = requests.get(tampered, timeout=30)
    assert response.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in response.content
    assert requests.get(url.replace("main/p.txt", "main/q.txt"), timeout=30).status_code == 403
    if version == "s3v4":
        too_long = s3.generate_presigned_url(
            "get_object", Params={"Bucket": repo, "Key": "main/p.txt"}, ExpiresIn=8 * 86400
        )
        assert requests.get(too_long, timeout=30).status_code == 403


def test_wrong_secret_or_key_refused(contract_target, repo):
    assert error_code(s3_client(contract_target, secret="wrong" * 8).list_objects_v2, Bucket=repo) == (
        403,
        "SignatureDoesNotMatch",
    )
    assert error_code(s3_client(contract_target, key_id="AKIANOTAKEY").list_objects_v2, Bucket=repo) == (
        403,
        "InvalidAccessKeyId",
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def streaming_put(target, repo: str, key: str, chunks: list[bytes], tamper: bool = False) -> requests.Response:
    """PutObject with an aws-chunked STREAMING-AWS4-HMAC-SHA256-PAYLOAD body, signed by hand (AWS' documented
    scheme: a seed signature over the headers, then each chunk's signature chained from the previous one)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    host = target.endpoint.split("://", 1)[1]
    decoded = sum(len(c) for c in chunks)
    headers = {
        "host": host,
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(decoded),
    }
    names = sorted(headers)
    canonical = "\n".join(
        ["PUT", f"/{repo}/{key}", "", *(f"{n}:{headers[n]}" for n in names), "", ";".join(names), headers[names[1]]]
    )
    key_bytes = _hmac(
        _hmac(_hmac(_hmac(b"AWS4" + target.secret_access_key.encode(), day), "us-east-1"), "s3"), "aws4_request"
    )
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    previous = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={target.access_key_id}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={previous}"
    )
    body = b""
    for data in [*chunks, b""]:
        string = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, hashlib.sha256(b"").hexdigest(),
             hashlib.sha256(data).hexdigest()]
        )  # fmt: skip
        previous = hmac.new(key_bytes, string.encode(), hashlib.sha256).hexdigest()
        sent = data.replace(b"a", b"b") if tamper else data
        body += f"{len(data):x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
    headers = {k: v for k, v in headers.items() if k != "host"}
    headers.update({"Authorization": authorization, "Content-Encoding": "aws-chunked"})
    return requests.put(f"{target.endpoint}/{repo}/{key}", data=body, headers=headers, timeout=30)


def test_aws_chunked_signed_upload(s3, repo, contract_target):
    chunks = [b"a" * 70000, b"tail"]
    assert streaming_put(contract_target, repo, "main/chunked.bin", chunks).status_code == 200
    assert s3.get_object(Bucket=repo, Key="main/chunked.bin")["Body"].read() == b"".join(chunks)
    refused = streaming_put(contract_target, repo, "main/forged.bin", chunks, tamper=True)
    assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content
    assert error_code(s3.head_object, Bucket=repo, Key="main/forged.bin")[0] == 404
