#!/bin/sh
# Renders alertmanager.yml with ALERTMANAGER_WEBHOOK_URL and starts Alertmanager on it; extra
# arguments go to Alertmanager. Alertmanager 0.25 reads no environment variables in its config.
set -eu

template="${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}"
config="${ALERTMANAGER_CONFIG:-/run/alertmanager/alertmanager.yml}"
binary="${ALERTMANAGER_BIN:-/bin/alertmanager}"
url="${ALERTMANAGER_WEBHOOK_URL:-}"

case "$url" in
  http://?* | https://?*) ;;
  *)
    echo "entrypoint: set ALERTMANAGER_WEBHOOK_URL to the http(s) URL alerts are posted to" >&2
    exit 2
    ;;
esac
# The URL lands in a double-quoted YAML string: refuse what would end or escape it.
case "$url" in
  *'"'* | *"\\"* | *' '*)
    echo "entrypoint: ALERTMANAGER_WEBHOOK_URL must not contain quotes, backslashes or spaces" >&2
    exit 2
    ;;
esac

# awk's index/substr, not sed or gsub: a URL's '&' or '|' must be copied, never interpreted.
URL="$url" awk '{
  at = index($0, "${ALERTMANAGER_WEBHOOK_URL}")
  if (at) $0 = substr($0, 1, at - 1) ENVIRON["URL"] substr($0, at + 27)
  print
}' "$template" > "$config"

exec "$binary" --config.file="$config" "$@"
