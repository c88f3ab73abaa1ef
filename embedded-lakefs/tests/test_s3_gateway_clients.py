"""The S3 gateway through s3fs and pandas ``storage_options``, and aws-chunked (streaming-signed) uploads."""

from __future__ import annotations

import uuid

import lakefs_sdk
import pandas as pd
import pytest
import s3fs
from lakefs_sdk.client import LakeFSClient


@pytest.fixture
def repo(contract_target) -> str:
    sdk = LakeFSClient(
        lakefs_sdk.Configuration(
            host=contract_target.api_url,
            username=contract_target.access_key_id,
            password=contract_target.secret_access_key,
        )
    )
    name = f"s3fs-{uuid.uuid4().hex[:10]}"
    sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}", default_branch="main")
    )
    yield name
    sdk.repositories_api.delete_repository(name)


def storage_options(target) -> dict:
    return {
        "key": target.access_key_id,
        "secret": target.secret_access_key,
        "client_kwargs": {"endpoint_url": target.endpoint, "region_name": "us-east-1"},
    }


def test_pandas_csv_round_trip(contract_target, repo):
    frame = pd.DataFrame({"image": ["a.png", "b.png"], "iou": [0.5, 0.75]})
    frame.to_csv(f"s3://{repo}/main/tables/scores.csv", index=False, storage_options=storage_options(contract_target))
    back = pd.read_csv(f"s3://{repo}/main/tables/scores.csv", storage_options=storage_options(contract_target))
    pd.testing.assert_frame_equal(back, frame)


def test_s3fs_listing_and_files(contract_target, repo):
    fs = s3fs.S3FileSystem(**storage_options(contract_target), skip_instance_cache=True)
    fs.pipe(f"{repo}/main/a/one.txt", b"1")
    fs.pipe(f"{repo}/main/a/b/two.txt", b"22")
    assert sorted(fs.ls(f"{repo}/main/a", detail=False)) == [f"{repo}/main/a/b", f"{repo}/main/a/one.txt"]
    assert fs.find(f"{repo}/main/") == [f"{repo}/main/a/b/two.txt", f"{repo}/main/a/one.txt"]
    assert fs.cat(f"{repo}/main/a/b/two.txt") == b"22" and fs.size(f"{repo}/main/a/b/two.txt") == 2
    fs.rm(f"{repo}/main/a/one.txt")
    assert not fs.exists(f"{repo}/main/a/one.txt")
