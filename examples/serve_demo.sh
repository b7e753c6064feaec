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
cat <<TXT

Serving cancer@production on $url  (Ctrl-C to stop)
  API docs:        $url/docs
  model and an example body: curl -s $url/models/cancer
  Open Inference Protocol v2: $url/v2/models/cancer
  metrics:         curl -s $url/metrics
TXT
wait $server
