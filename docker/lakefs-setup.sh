#!/bin/sh
# Create lakeFS' first (admin) user with known keys, once: the lakefs-setup service of docker-compose.yml.
#
# lakeFS creates its LAKEFS_INSTALLATION_* user only with a local database; with Postgres a fresh
# installation has no user until someone calls the setup API. This script does that through the API:
#
#   GET  /api/v1/setup_lakefs   -> {"state": "initialized" | "not_initialized", ...}
#   POST /api/v1/setup_lakefs   {"username": ..., "key": {"access_key_id": ..., "secret_access_key": ...}}
#                               -> 200 (user created) or 409 (already set up)
#
# It is idempotent: on an installation that is already set up it changes nothing. Either way it ends by
# checking that the keys authenticate (GET /api/v1/user), so a stack whose lakeFS was set up with other
# keys fails here, loudly, instead of later in the first `mlflow run`.
#
# Settings (the names lakectl and the project read): LAKECTL_SERVER_ENDPOINT_URL (default
# http://lakefs:8000), LAKECTL_CREDENTIALS_ACCESS_KEY_ID, LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY; and
# LAKEFS_ADMIN_USER (default admin). Needs only sh and curl. The secret never appears in a command line.
set -eu

endpoint=${LAKECTL_SERVER_ENDPOINT_URL:-http://lakefs:8000}
api="${endpoint%/}/api/v1"
user=${LAKEFS_ADMIN_USER:-admin}
key_id=${LAKECTL_CREDENTIALS_ACCESS_KEY_ID:?LAKECTL_CREDENTIALS_ACCESS_KEY_ID is not set}
secret=${LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY:?LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY is not set}

body_file=$(mktemp)
trap 'rm -f "$body_file"' EXIT

fail() {
    echo "lakefs-setup: error: $*" >&2
    exit 1
}

# A string quoted for JSON and for curl's config file alike (both escape \ and " with a backslash).
quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# request METHOD PATH [curl options]: the response body goes to $body_file, the status code to stdout.
# Connection failures and 5xx answers are retried; a repeated POST is harmless (it answers 409).
request() {
    method=$1
    path=$2
    shift 2
    curl --silent --show-error --connect-timeout 5 --max-time 30 \
        --retry 5 --retry-delay 2 --retry-connrefused \
        --request "$method" --output "$body_file" --write-out '%{http_code}' "$@" "$api$path"
}

code=$(request GET /setup_lakefs) || fail "lakeFS at $endpoint cannot be reached"
[ "$code" = 200 ] || fail "GET /api/v1/setup_lakefs answered $code: $(cat "$body_file")"

if grep -q '"state" *: *"initialized"' "$body_file"; then
    echo "lakefs-setup: lakeFS at $endpoint is already set up; nothing to do"
elif grep -q '"state" *: *"not_initialized"' "$body_file"; then
    code=$(printf '{"username": %s, "key": {"access_key_id": %s, "secret_access_key": %s}}' \
            "$(quote "$user")" "$(quote "$key_id")" "$(quote "$secret")" \
        | request POST /setup_lakefs --header 'Content-Type: application/json' --data-binary @-) \
        || fail "lakeFS at $endpoint cannot be reached"
    case $code in
        200) echo "lakefs-setup: created the lakeFS admin user '$user' with access key id $key_id" ;;
        409) echo "lakefs-setup: lakeFS at $endpoint was set up meanwhile; nothing to do" ;;
        *) fail "POST /api/v1/setup_lakefs answered $code: $(cat "$body_file")" ;;
    esac
else
    fail "unexpected answer to GET /api/v1/setup_lakefs: $(cat "$body_file")"
fi

code=$(printf 'user = %s\n' "$(quote "$key_id:$secret")" | request GET /user --config -) \
    || fail "lakeFS at $endpoint cannot be reached"
case $code in
    200) echo "lakefs-setup: the access key $key_id authenticates" ;;
    401 | 403) fail "lakeFS at $endpoint rejects the access key $key_id: it was set up with other keys" \
        "(use those, or remove its volumes with 'docker compose down -v' to start afresh)" ;;
    *) fail "GET /api/v1/user answered $code: $(cat "$body_file")" ;;
esac
