# Runs before a platform container's own program (MinIO, MySQL): refuses to start while a credential is still
# the template's placeholder, as MLflow's prepare step does, then becomes the program. POSIX sh and nothing
# else: the MinIO and MySQL images have little more than a shell.
#   command: [/bin/sh, /scripts/refuse-placeholders.sh, PROGRAM]   args: [ARGS...]
#   env KTO_SECRET_ENV: the names of the variables to check, separated by spaces
bad=""
for name in $KTO_SECRET_ENV; do
  case "$name" in
    *[!A-Za-z0-9_]* | [0-9]*) echo "refuse-placeholders: not a variable name: $name" >&2; exit 1 ;;
  esac
  eval "value=\${$name-}"
  case "$value" in
    [Cc][Hh][Aa][Nn][Gg][Ee]-[Mm][Ee]) bad="$bad $name" ;;
  esac
done
if [ -n "$bad" ]; then
  echo "refusing to start:$bad still 'change-me': set real values in secrets.env and re-apply" >&2
  exit 1
fi
exec "$@"
