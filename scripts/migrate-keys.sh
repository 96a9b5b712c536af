#!/bin/sh
# migrate-keys.sh - rename the per-user keys of a deployment made before
# the hash tags (imbridge < 0.10) to their tagged names:
#   <prefix>:<kind>:<id>  ->  <prefix>:<kind>:{<id>}
# (kinds lease, fence, seq, inbox, cursor, acked, pres, rooms, lf:u, lf:ip,
# lf:d; '{', '}' and '%' in the id written %7B, %7D, %25: common/keys.h).
# Values and TTLs are kept (RENAMENX). Keys of the whole deployment
# (<prefix>:workers, :edges, :pushq) keep their names.
#
# Run it with both services stopped, against the one Redis the deployment
# used (not a Redis Cluster: move the data to a cluster after this, e.g.
# with redis-cli --cluster import). It may run again: tagged keys are left
# alone. A key whose tagged name exists already (a new bridge ran before the
# migration) is left as it is and counted as a clash: the bridge uses the
# tagged one.
#
#   scripts/migrate-keys.sh [--prefix imb] [redis-cli options: -h H -p P --user U -a PW ...]
# Prints one line: "renamed N tagged N clashes N" (tagged: keys found with
# their tag, renamed ones that SCAN meets again included).
set -eu

prefix=imb
while [ $# -gt 0 ]; do
    case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    -h|--help)
        if [ "$1" = -h ] && [ $# -gt 1 ]; then break; fi # redis-cli's -h HOST
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 0 ;;
    *) break ;;
    esac
done
case $prefix in
''|*'{'*|*'}'*|*' '*) echo "migrate-keys: bad prefix '$prefix'" >&2; exit 2 ;;
esac

# One SCAN batch, renamed in one script call (atomic per batch).
# ARGV[1] cursor  ARGV[2] prefix  ARGV[3] SCAN COUNT
# Returns "<next cursor> <renamed> <already tagged> <clashes>".
lua='
local prefix = ARGV[2]
local kinds = {"lease", "fence", "seq", "inbox", "cursor", "acked", "pres", "rooms",
               "lf:u", "lf:ip", "lf:d"}
local pattern = string.gsub(prefix, "[%*%?%[%]\\]", "\\%0") .. ":*"
local esc = {["{"] = "%7B", ["}"] = "%7D", ["%"] = "%25"}
local r = redis.call("SCAN", ARGV[1], "MATCH", pattern, "COUNT", ARGV[3])
local renamed, tagged, clashes = 0, 0, 0
for _, key in ipairs(r[2]) do
  for _, kind in ipairs(kinds) do
    local head = prefix .. ":" .. kind .. ":"
    if string.sub(key, 1, #head) == head then
      local id = string.sub(key, #head + 1)
      if string.find(id, "^{[^{}]*}$") then
        tagged = tagged + 1
      elseif id ~= "" then
        local new = head .. "{" .. string.gsub(id, "[{}%%]", esc) .. "}"
        if redis.call("RENAMENX", key, new) == 1 then
          renamed = renamed + 1
        else
          clashes = clashes + 1
        end
      end
      break
    end
  end
end
return r[1] .. " " .. renamed .. " " .. tagged .. " " .. clashes
'

cursor=0
renamed=0
tagged=0
clashes=0
while :; do
    out=$(redis-cli "$@" --raw EVAL "$lua" 0 "$cursor" "$prefix" 1000) || {
        echo "migrate-keys: redis-cli failed: $out" >&2
        exit 1
    }
    case $out in
    *[!0-9\ ]*|'') echo "migrate-keys: unexpected answer: $out" >&2; exit 1 ;;
    esac
    read -r cursor r t c <<EOF
$out
EOF
    renamed=$((renamed + r))
    tagged=$((tagged + t))
    clashes=$((clashes + c))
    [ "$cursor" = 0 ] && break
done
echo "renamed $renamed tagged $tagged clashes $clashes"
