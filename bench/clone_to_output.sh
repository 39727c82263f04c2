#!/bin/bash
# Time from `git clone` to a custom task's output, following docs/writing-a-task-type.md:
# clone, make install, the guide's tasks/word_count.py verbatim, the dev stack, upload,
# submit, taskctl tasks wait, fetch counts.json.   bash bench/clone_to_output.sh [REPO]
set -e
start=$(date +%s.%N)
d=$(mktemp -d)
git clone -q "${1:-$(cd "$(dirname "$0")/.." && pwd)}" "$d/repo"
cd "$d/repo"
make install >/dev/null
# 1. Declare it: the guide's module, verbatim (first python block of the guide).
python3 - <<'PY'
import re
text = open("docs/writing-a-task-type.md").read()
blocks = re.findall(r"```python\n(.*?)```", text, re.S)
open("tasks/word_count.py", "w").write(blocks[0])
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TASK_MODULES=example_tasks,word_count .venv/bin/taskctl dev --port $port --in-memory >/dev/null 2>"$d/dev.err" &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$d"' EXIT
until curl -sf localhost:$port/health >/dev/null && [ -f .local/stack.json ]; do sleep 0.2; done
echo "the cat and the hat" > "$d/hat.txt"
curl -sf -F file=@"$d/hat.txt" -H 'X-Requested-With: curl' localhost:$port/uploads >/dev/null
bucket=$(.venv/bin/python -c 'from taskcore.settings import Settings; print(Settings.from_env().bucket_name)')
id=$(curl -sf -X POST localhost:$port/submit-task -H 'Content-Type: application/json' \
     -d "{\"task_type\":\"word_count\",\"source_uri\":\"gs://$bucket/uploads/hat.txt\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
submitted=$(date +%s.%N)
.venv/bin/taskctl tasks wait "$id" --api-url http://localhost:$port --timeout 60 >/dev/null
curl -sf localhost:$port/tasks/$id/outputs/counts.json
end=$(date +%s.%N)
echo
python3 -c "print(f'clone to output: {$end-$start:.0f} s (submit to output {$end-$submitted:.1f} s)')"
