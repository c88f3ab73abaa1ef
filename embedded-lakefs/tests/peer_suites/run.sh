#!/usr/bin/env bash
# Run a lakeFS client's own test suite against the embedded server (issue 27).
#
#   run.sh lakefs-spec <checkout> [pytest args]   lakefs-spec's tests/ (its conftest: localhost:8000, quickstart keys)
#   run.sh wrapper <checkout> [pytest args]       lakeFS' clients/python-wrapper tests/integration
#
# <checkout> is the directory holding the suite's `tests/` folder. The server runs on a fresh temp data
# directory at 127.0.0.1:$PORT (8000: lakefs-spec's conftest hard-codes it) with the lakeFS quickstart keys;
# only the suites' environment is adapted: endpoint, keys and a local:// storage namespace. PYTHON picks the
# interpreter (a venv holding the suite's own client versions and pytest plugins).
set -euo pipefail

usage() { echo "usage: $0 {lakefs-spec|wrapper} <checkout> [pytest args]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
suite=$1 checkout=$(cd "$2" && pwd) && shift 2
[[ -d $checkout/tests ]] || { echo "$0: $checkout has no tests/ folder" >&2; exit 2; }
PYTHON=${PYTHON:-python}
PORT=${PORT:-8000}
ACCESS_KEY_ID=AKIAIOSFOLQUICKSTART
SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY

data_dir=$(mktemp -d -t embedded-lakefs-peer.XXXXXX)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$data_dir"
}
trap cleanup EXIT
printf '{"access_key_id": "%s", "secret_access_key": "%s"}' "$ACCESS_KEY_ID" "$SECRET_ACCESS_KEY" \
  >"$data_dir/credentials.json"
"$PYTHON" -m embedded_lakefs --data-dir "$data_dir" --port "$PORT" --no-fsync 2>"$data_dir/server.log" &
server_pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/api/v1/healthcheck" >/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$data_dir/server.log" >&2; exit 1; }
  sleep 0.1
done

cd "$checkout"
case $suite in
  lakefs-spec) "$PYTHON" -m pytest -p no:cacheprovider tests "$@" ;;  # its conftest names server and keys
  wrapper)
    export LAKECTL_SERVER_ENDPOINT_URL=http://127.0.0.1:$PORT
    export LAKECTL_CREDENTIALS_ACCESS_KEY_ID=$ACCESS_KEY_ID
    export LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY=$SECRET_ACCESS_KEY
    export STORAGE_NAMESPACE=local://peer-suites
    "$PYTHON" -m pytest -p no:cacheprovider tests/integration "$@"
    ;;
  *) usage ;;
esac
