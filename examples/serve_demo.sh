#!/usr/bin/env bash
# The demo's last step: serve cancer@production on 127.0.0.1:8000, show a working request, keep serving.
set -euo pipefail
work=${1:-.demo}
port=${PORT:-8000}
shipml=.venv/bin/shipml
url="http://127.0.0.1:$port"

.venv/bin/python - "$work" <<'PY'
import json, sys
import pandas as pd
work = sys.argv[1]
rows = pd.read_csv(f"{work}/new_rows.csv").head(2)
with open(f"{work}/request.json", "w") as f:
    json.dump({"instances": rows.to_dict("records")}, f)
PY

printf '\n\033[1m$ shipml serve cancer@production --port %s\033[0m\n' "$port"
$shipml serve cancer@production --port "$port" &
server=$!
# Ctrl-C reaches the server too (same process group): it drains and exits; the script only waits for it.
trap 'wait $server; exit 130' INT
trap 'kill -TERM $server 2>/dev/null; wait $server' TERM
for _ in $(seq 1 600); do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the server exited (is port $port in use? run: make demo PORT=8001)"; exit 1
    fi
    if curl -fs "$url/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.1
done

request="curl -s -X POST $url/predict -H 'content-type: application/json' -d @$work/request.json"
printf '\n\033[1m$ %s\033[0m\n' "$request"
eval "$request"
echo

echo
echo "# A release without a restart: a canary sends 20% of the requests to cancer:1.2.0, a candidate that passed"
echo "# its golden check but fails on real rows. The server aborts it by itself once it breaks its limits,"
echo "# and the stable version answers every request the canary failed: clients see no error."
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step $shipml canary start cancer 1.2.0 --weight 20 --max-error-rate 0.05 --min-requests 20 \
    --reason "demo: a bad candidate"
sleep 2  # the server reads the registry's release state about once a second
printf '\n\033[1m$ python examples/traffic.py %s %s 300\033[0m\n' "$url" "$work/test.csv"
.venv/bin/python examples/traffic.py "$url" "$work/test.csv" 300
step $shipml canary status cancer
cat <<TXT

Serving cancer@production on $url  (Ctrl-C to stop)
  API docs:        $url/docs
  model and an example body: curl -s $url/models/cancer
  Open Inference Protocol v2: $url/v2/models/cancer
  metrics:         curl -s $url/metrics
  release state:   curl -s $url/admin/releases
  try a release:   shipml alias cancer production 1.1.0   (the server switches within ~1 s)
                   shipml rollback cancer
TXT
wait $server
