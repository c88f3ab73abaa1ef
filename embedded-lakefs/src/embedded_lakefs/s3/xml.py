"""S3 XML: error bodies (lakeFS gateway's codes and messages) and response documents."""

from __future__ import annotations

import datetime
import uuid
import xml.etree.ElementTree as ET

from ..errors import ApiError
from ..transport import Response

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
CONTENT_TYPE = "application/xml"

# code: (HTTP status, message), as lakeFS' pkg/gateway/errors answers them
ERRORS = {
    "AccessDenied": (403, "Access Denied."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "ErrReadOnlyRepository": (403, "Attempted to write to a read-only repository"),
    "ErrWriteToProtectedBranch": (403, "Attempted to write to a protected branch"),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error, please try again."),
    "InvalidAccessKeyId": (403, "The access key ID you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid argument."),
    "InvalidPart": (400, "One or more of the specified parts could not be found."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid request."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingSecurityHeader": (400, "Your request was missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified multipart upload does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the server's time is too large."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}


class S3Error(ApiError):
    """An S3 error ``code`` (see ``ERRORS``), answered as an ``<Error>`` document."""

    def __init__(self, code: str, message: str | None = None):
        status, default = ERRORS[code]
        super().__init__(message or default, status)
        self.code = code


def element(tag: str, *children, text=None) -> ET.Element:
    """``<tag>text</tag>`` or ``<tag>children</tag>``; children that are None are left out."""
    node = ET.Element(tag)
    if text is not None:
        node.text = str(text)
    node.extend(child for child in children if child is not None)
    return node


def _serialized(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def document(root: ET.Element, status: int = 200, headers: dict | None = None) -> Response:
    """A response document in S3's namespace."""
    root.set("xmlns", NAMESPACE)
    return Response(status, _serialized(root), content_type=CONTENT_TYPE, headers=headers or {})


def error_response(error: S3Error, resource: str) -> Response:
    request_id = uuid.uuid4().hex
    root = element(
        "Error",
        element("Code", text=error.code),
        element("Message", text=error.message),
        element("Resource", text=resource),
        element("RequestId", text=request_id),
    )
    return Response(
        error.status, _serialized(root), content_type=CONTENT_TYPE, headers={"x-amz-request-id": request_id}
    )


def timestamp(seconds: int) -> str:
    """ISO 8601 as S3 lists times: ``2024-01-02T03:04:05.000Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse(body: bytes, root_tag: str) -> ET.Element:
    """A request document whose root is ``root_tag`` (namespace ignored); MalformedXML otherwise."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error("MalformedXML")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML") from None
    for node in root.iter():
        node.tag = node.tag.rpartition("}")[2]
    if root.tag != root_tag:
        raise S3Error("MalformedXML")
    return root
