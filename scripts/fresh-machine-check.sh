#!/usr/bin/env bash
# Fresh-machine check: the README's install command and quick demo, run in a minimal Debian 12 root
# (debootstrap minbase + compiler, cmake, python3, git) that has no BLAS and nothing of this
# machine's build state, so a dependency that only this machine happens to have fails here.
#
#   sudo bash scripts/fresh-machine-check.sh
#
# Runs inside a chroot with a clean environment:
#   npm ci && npx hiermem demo --quick      then   npx hiermem demo prose --quick, npx hiermem info
# The project goes in as a clone would have it: the files git tracks plus untracked, not ignored
# ones (so uncommitted work is checked too, and build/, node_modules/, prebuilds/ are not).
#
# Environment:
#   HIERMEM_FRESH_ROOT_CACHE=0         build the root with debootstrap every time (no cache read or write)
#   HIERMEM_FRESH_ROOT_CACHE_DIR=DIR   where the pristine root's tarball is kept (/var/cache/hiermem)
#   HIERMEM_FRESH_WORKDIR=DIR          where the temporary root is made (/var/tmp: roots are ~1 GB,
#                                      too big for a small tmpfs /tmp)
#   HIERMEM_FRESH_PHASE_TIMEOUT=S      seconds allowed per step inside the root (900)
#   HIERMEM_FRESH_KEEP=1               keep the temporary root (unmounted) for a look after the run
# Needs root (debootstrap, chroot, mount). It never skips: whatever stops it exits non-zero.
set -euo pipefail

# chroot, mount and debootstrap live in sbin, which a non-login shell's PATH may lack
export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C   # timings use a decimal point

SUITE=bookworm
VARIANT=minbase
PACKAGES=g++,cmake,make,python3,git,ca-certificates
PROJECT_IN_ROOT=/root/hiermem
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
PHASE_TIMEOUT=${HIERMEM_FRESH_PHASE_TIMEOUT:-900}

repo=$(cd "$(dirname "$0")/.." && pwd)
work=""
root=""
phase_names=()
phase_secs=()
t_start=$EPOCHREALTIME

say() { printf '[fresh-machine] %s\n' "$*"; }
die() { printf '[fresh-machine] FAILED: %s\n' "$*" >&2; exit 1; }

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
phase_t0=""
phase_begin() { phase_t0=$EPOCHREALTIME; say "$1 ..."; }
phase_end() {
  local s; s=$(elapsed "$phase_t0")
  phase_names+=("$1"); phase_secs+=("$s")
  say "$1: ${s} s"
}

# a log's tail, so a CI failure is readable without the (deleted) temp root
show_tail() {
  local f=$1 n=${2:-60}
  [ -s "$f" ] || return 0
  local name=${f#"$root"}; name=${name#"$work"/}   # as seen inside the root, or the log's own name
  printf -- '----- last %s lines of %s -----\n' "$n" "$name" >&2
  tail -n "$n" "$f" >&2
  printf -- '-----\n' >&2
}

# mount points at or below $1, deepest first
mounts_under() {
  awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

# processes whose root is the chroot (stragglers of a failed or interrupted step)
pids_in_root() {
  find /proc -mindepth 2 -maxdepth 2 -name root -lname "$1" 2>/dev/null | awk -F/ '$3 ~ /^[0-9]+$/ { print $3 }'
  return 0
}

stop_processes_in_root() {
  local r=$1 pids i
  pids=$(pids_in_root "$r")
  [ -n "$pids" ] || return 0
  say "stopping processes left in the root: $(echo $pids)"
  kill -TERM $pids 2>/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.5
    pids=$(pids_in_root "$r"); [ -n "$pids" ] || return 0
  done
  kill -KILL $pids 2>/dev/null
  sleep 0.5
}

unmount_all() {
  local r=$1 m
  while read -r m; do
    [ -n "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" || true   # lazy: a straggler process still holds it
  done < <(mounts_under "$r")
  [ -z "$(mounts_under "$r")" ]
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [ -n "$root" ] && [ -d "$root" ]; then
    stop_processes_in_root "$root"
    if ! unmount_all "$root"; then
      echo "[fresh-machine] could not unmount, NOT removing $work; still mounted:" >&2
      mounts_under "$root" >&2
      exit 1
    fi
  fi
  if [ -n "$work" ] && [ -d "$work" ]; then
    if [ "${HIERMEM_FRESH_KEEP:-0}" = 1 ]; then
      say "kept $root (unmounted)"
    else
      local t0=$EPOCHREALTIME
      # --one-file-system: even if a mount survived, rm never walks into the host's /dev or /proc
      case "$work" in
        */hiermem-fresh.*) rm -rf --one-file-system "$work" ;;
        *) echo "[fresh-machine] refusing to remove unexpected path '$work'" >&2 ;;
      esac
      phase_names+=("cleanup"); phase_secs+=("$(elapsed "$t0")")
    fi
  fi
  if [ ${#phase_names[@]} -gt 0 ]; then
    say "timings:"
    local i
    for i in "${!phase_names[@]}"; do printf '[fresh-machine]   %-28s %8s s\n' "${phase_names[$i]}" "${phase_secs[$i]}"; done
    printf '[fresh-machine]   %-28s %8s s\n' "total" "$(elapsed "$t_start")"
  fi
  if [ "$rc" = 0 ]; then say "PASSED"; else echo "[fresh-machine] FAILED (exit $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- preflight: say exactly what is missing rather than skip -------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mount); run it with sudo"
for tool in chroot mount umount tar git awk timeout; do
  command -v "$tool" >/dev/null || die "'$tool' not found on this machine"
done
node_bin=$(command -v node) || die "node not found: the root gets this machine's node binary"
node_bin=$(readlink -f "$node_bin")
npm_cli=$(command -v npm) || die "npm not found: the root gets this machine's npm"
npm_cli=$(readlink -f "$npm_cli")
npm_dir=$(dirname "$(dirname "$npm_cli")")   # .../node_modules/npm/bin/npm-cli.js -> .../node_modules/npm
[ -f "$npm_dir/package.json" ] && [ -f "$npm_dir/bin/npx-cli.js" ] || die "npm resolves to $npm_cli, which is not inside an npm package folder"
[ -f "$CA_BUNDLE" ] || die "$CA_BUNDLE not found: npm inside the root needs it to reach the registry"
git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$repo is not a git checkout"

if command -v zstd >/dev/null; then
  compress=(zstd -q -T0 -3); decompress=(zstd -q -dc); ext=tar.zst
else
  compress=(gzip -1); decompress=(gzip -dc); ext=tar.gz
fi
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
cache_key=$(printf '%s\n' "$SUITE" "$VARIANT" "$arch" "$PACKAGES" | sha256sum | cut -c1-12)
cache_dir=${HIERMEM_FRESH_ROOT_CACHE_DIR:-/var/cache/hiermem}
cache_file="$cache_dir/fresh-root-$SUITE-$cache_key.$ext"
use_cache=1
[ "${HIERMEM_FRESH_ROOT_CACHE:-1}" = 0 ] && use_cache=0

workdir_parent=${HIERMEM_FRESH_WORKDIR:-/var/tmp}
mkdir -p "$workdir_parent"
work=$(mktemp -d "$workdir_parent/hiermem-fresh.XXXXXX")
work=$(readlink -f "$work")   # canonical: it is compared with /proc/*/root and /proc/self/mounts
root="$work/root"
mkdir "$root"
say "root: $root"

# --- 1. a pristine Debian root: from the cache, or debootstrap ----------------------------------
debian_mirror() {
  local src=/etc/apt/sources.list.d/debian.sources uri
  [ -f "$src" ] || die "$src not found: it names the Debian mirror debootstrap must use"
  # deb822: stanzas split by blank lines; take the URIs of the one whose Suites lists $SUITE itself
  uri=$(awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
    { u = ""; hit = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); u = w[2] }
        if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == suite) hit = 1 }
      }
      if (hit && u != "") { print u; exit } }' "$src")
  [ -n "$uri" ] || die "no stanza with Suites: $SUITE and a URIs: line in $src"
  printf '%s\n' "$uri"
}

root_from_cache() {
  [ "$use_cache" = 1 ] && [ -f "$cache_file" ] || return 1
  phase_begin "root from cache ($(basename "$cache_file"))"
  if ! "${decompress[@]}" "$cache_file" | tar -x --numeric-owner -C "$root" -f -; then
    # a damaged tarball: drop it and build afresh rather than fail every later run
    say "cache unpack failed; removing $cache_file and running debootstrap"
    rm -f "$cache_file"
    rm -rf --one-file-system "$root"; mkdir "$root"
    return 1
  fi
  phase_end "root from cache"
}

root_from_debootstrap() {
  if ! command -v debootstrap >/dev/null; then
    say "debootstrap missing; installing it"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >"$work/apt.log" 2>&1 \
      || { show_tail "$work/apt.log" 20; die "debootstrap is not installed and apt-get could not install it"; }
  fi
  local mirror; mirror=$(debian_mirror)
  phase_begin "debootstrap $SUITE ($VARIANT) from $mirror"
  if ! debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    show_tail "$work/debootstrap.log" 40
    show_tail "$root/debootstrap/debootstrap.log" 40
    die "debootstrap failed"
  fi
  # the downloaded .debs are not part of a fresh machine and would only bloat the cache
  rm -f "$root"/var/cache/apt/archives/*.deb
  phase_end "debootstrap"
  # the cache must hold a root that has never been mounted into or written by a run
  [ -z "$(mounts_under "$root")" ] || die "debootstrap left mounts under $root"
  if [ "$use_cache" = 1 ]; then
    phase_begin "write cache $cache_file"
    mkdir -p "$cache_dir"
    local tmp="$cache_file.tmp.$$"
    if tar -c --numeric-owner -C "$root" -f - . | "${compress[@]}" >"$tmp"; then
      mv -f "$tmp" "$cache_file"   # atomic: a concurrent run sees the whole tarball or none
    else
      rm -f "$tmp"; say "could not write the cache (continuing without it)"
    fi
    phase_end "write cache"
  fi
}

root_from_cache || root_from_debootstrap

# the point of the check: the build must not depend on a BLAS, so the root must not offer one
phase_begin "assert no BLAS in the root"
blas=$(find "$root" -xdev \( -name 'libopenblas*' -o -name 'libblas*' \) -print | head -n 20 || true)
[ -z "$blas" ] || { printf '%s\n' "$blas" >&2; die "the root has BLAS files (listed above); a fresh machine has none"; }
phase_end "assert no BLAS"

# --- 2. this machine's node and npm, DNS, CA bundle, npm config ----------------------------------
phase_begin "copy in node, npm, config and the project"
install -m 0755 "$node_bin" "$root/usr/bin/node"
mkdir -p "$root/usr/lib/node_modules"
cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
rm -f "$root/etc/resolv.conf"; cp -L /etc/resolv.conf "$root/etc/resolv.conf"
cp -L "$CA_BUNDLE" "$root$CA_BUNDLE"   # this machine's bundle: it may hold a proxy's CA
if [ -f /root/.npmrc ]; then
  # nodedir points at this machine's node headers, which the root does not have
  grep -v -E '^[[:space:]]*nodedir[[:space:]]*=' /root/.npmrc >"$root/root/.npmrc" || true
fi

# --- 3. the project, as a clone has it -----------------------------------------------------------
mkdir -p "$root$PROJECT_IN_ROOT"
# tracked (minus ones deleted in the work tree) plus untracked-not-ignored files; --no-recursion so
# a listed directory (a submodule) does not drag in ignored content
( cd "$repo" && git ls-files -z -co --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar -c --null --no-recursion -T - -f - ) \
  | tar -x -C "$root$PROJECT_IN_ROOT" -f -
# a .git, as a clone has (nothing in the install should need it, but a clone is what users get)
if ! { git -C "$root$PROJECT_IN_ROOT" -c init.defaultBranch=main init -q \
       && git -C "$root$PROJECT_IN_ROOT" add -A \
       && git -C "$root$PROJECT_IN_ROOT" -c user.name=fresh-machine-check -c user.email=fresh@localhost \
            -c commit.gpgsign=false commit -q --no-verify -m "working tree snapshot"; } >/dev/null 2>&1; then
  say "could not make the copy a git repo (continuing: the install does not need one)"
fi
for junk in node_modules build dist prebuilds; do
  [ ! -e "$root$PROJECT_IN_ROOT/$junk" ] || die "$junk/ came along with the project copy; a clone has none"
done
phase_end "copy in"

# --- 4. mounts, then the README's commands in a clean environment --------------------------------
mount -t proc proc "$root/proc" || die "cannot mount /proc in $root (no mount permission here?)"
mount --bind /dev "$root/dev" || die "cannot bind-mount /dev into $root"

chroot_bin=$(command -v chroot)
in_root() {   # in_root LOG COMMAND...: runs COMMAND in the project folder inside the root
  local log=$1; shift
  # --foreground: Ctrl-C reaches the whole build; stragglers are stopped by the cleanup
  timeout --foreground -k 30 "$PHASE_TIMEOUT" env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin NODE_EXTRA_CA_CERTS="$CA_BUNDLE" \
    "$chroot_bin" "$root" /bin/bash -c 'cd "$0" && exec "$@"' "$PROJECT_IN_ROOT" "$@" >"$log" 2>&1
}
fail_in_root() {   # fail_in_root STEP LOG RC
  show_tail "$2" 60
  local npm_log
  npm_log=$(ls -t "$root"/root/.npm/_logs/*-debug-0.log 2>/dev/null | head -n 1 || true)
  [ -z "$npm_log" ] || show_tail "$npm_log" 20
  [ "$3" = 124 ] && die "'$1' did not finish within ${PHASE_TIMEOUT} s"
  die "'$1' exited $3 inside the fresh root"
}

phase_begin "sanity: node and npm run in the root"
rc=0; in_root "$work/sanity.log" sh -c 'node --version && npm --version' || rc=$?
[ "$rc" = 0 ] || { say "(node needs only libc/libstdc++; ldd $node_bin:)"; ldd "$node_bin" >&2 || true; fail_in_root "node --version && npm --version" "$work/sanity.log" "$rc"; }
say "node $(sed -n 1p "$work/sanity.log"), npm $(sed -n 2p "$work/sanity.log")"
phase_end "sanity"

# the README's command `npm ci && npx hiermem demo --quick`, one step at a time for the timings
phase_begin "npm ci"
rc=0; in_root "$work/npm-ci.log" npm ci || rc=$?
[ "$rc" = 0 ] || fail_in_root "npm ci" "$work/npm-ci.log" "$rc"
phase_end "npm ci"

phase_begin "npx hiermem demo --quick"
rc=0; in_root "$work/demo.log" npx hiermem demo --quick || rc=$?
[ "$rc" = 0 ] || fail_in_root "npx hiermem demo --quick" "$work/demo.log" "$rc"
tail -n 15 "$work/demo.log"
phase_end "demo --quick"

# the prose experiment on the same install: its BPE needs the optional native package `tokenizers`,
# which must come with `npm ci` (a fallback to bytes would pass silently, so the kind is checked)
phase_begin "npx hiermem demo prose --quick"
rc=0; in_root "$work/prose.log" npx hiermem demo prose --quick --out runs/fresh-prose || rc=$?
[ "$rc" = 0 ] || fail_in_root "npx hiermem demo prose --quick" "$work/prose.log" "$rc"
rc=0; in_root "$work/prose-check.log" node -e '
  const r = JSON.parse(require("fs").readFileSync("runs/fresh-prose/results.json", "utf8"));
  require("fs").statSync("runs/fresh-prose/report.html");
  if (r.tokenizer.kind !== "bpe") { console.error("prose demo ran on " + r.tokenizer.kind + ": " + (r.tokenizer.note || "")); process.exit(1); }
  console.log("prose demo: BPE " + r.tokenizer.vocabSize + " tokens, report written");' || rc=$?
[ "$rc" = 0 ] || fail_in_root "prose demo results check" "$work/prose-check.log" "$rc"
cat "$work/prose-check.log"
phase_end "demo prose --quick"

phase_begin "npx hiermem info"
rc=0; in_root "$work/info.log" npx hiermem info || rc=$?
[ "$rc" = 0 ] || fail_in_root "npx hiermem info" "$work/info.log" "$rc"
cat "$work/info.log"
phase_end "info"
