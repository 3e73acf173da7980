# Sourced (not run) by Kaldi-style scripts after they set their defaults:
#     nj=4; cmd=run.pl; use_gpu=false
#     . utils/parse_options.sh
# Every leading `--name value` or `--name=value` argument sets the shell variable `name`
# (dashes become underscores); the variable must already exist, so a misspelt option is an
# error. A variable whose default is true/false only takes true/false. `--config <file>`
# sources a file of `name=value` lines first, so command-line options override it.
# `--help` / `-h` prints $help_message. Parsing stops at the first argument that is not an
# option; the caller's positional parameters are left holding the rest.

__po_fail() {
  echo "$0: $*" >&2
  exit 1
}

# The config file is read before any other option, wherever it appears.
__po_args=("$@")
for ((__po_i = 0; __po_i < ${#__po_args[@]}; __po_i++)); do
  case "${__po_args[__po_i]}" in
    --config=*) __po_config=${__po_args[__po_i]#--config=} ;;
    --config) __po_config=${__po_args[__po_i + 1]-}; __po_i=$((__po_i + 1)) ;;
    --help|-h|--*=*) continue ;;
    --?*) __po_i=$((__po_i + 1)); continue ;;   # skip the option's value
    *) break ;;
  esac
  [ -n "$__po_config" ] || __po_fail "--config needs a file name"
  [ -r "$__po_config" ] || __po_fail "cannot read config file '$__po_config'"
  . "$__po_config" || __po_fail "error in config file '$__po_config'"
done

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      if [ -n "${help_message-}" ]; then printf '%s\n' "$help_message" >&2
      else echo "$0: no help message available" >&2; fi
      exit 0 ;;
    --config=*) shift; continue ;;
    --config) shift 2; continue ;;
    --*=*) __po_name=${1%%=*}; __po_value=${1#*=}; shift ;;
    --?*)
      [ $# -ge 2 ] || __po_fail "option $1 needs a value"
      __po_name=$1; __po_value=$2; shift 2 ;;
    *) break ;;
  esac
  __po_var=${__po_name#--}
  __po_var=${__po_var//-/_}
  case "$__po_var" in
    ''|[0-9]*|*[!A-Za-z0-9_]*|__po_*) __po_fail "invalid option $__po_name" ;;
  esac
  declare -p "$__po_var" >/dev/null 2>&1 || __po_fail "invalid option $__po_name"
  if [ "${!__po_var}" = true ] || [ "${!__po_var}" = false ]; then
    case "$__po_value" in
      true|false) ;;
      *) __po_fail "option $__po_name expects true or false, got '$__po_value'" ;;
    esac
  fi
  printf -v "$__po_var" '%s' "$__po_value"
done

# An empty --cmd is almost always a scripting error (an unset variable in the caller).
if declare -p cmd >/dev/null 2>&1 && [ -z "$cmd" ]; then
  __po_fail "empty argument to the --cmd option"
fi
unset -f __po_fail
unset __po_args __po_i __po_config __po_name __po_value __po_var
true
