#!/usr/bin/env bash
# release-check.sh: what CI runs to prove that a release would build.
#
# It installs goreleaser into the test tool cache if it is not there, checks
# goreleaser.yaml, runs a snapshot release (no docker engine, no publishing,
# no signing, no network beyond the Go module proxy), and then checks what
# came out: every meshctl archive carries the four completion scripts,
# checksums.txt matches, and the linux/amd64 meshctl, meshproxy and
# meshcontroller print the version and commit the snapshot stamped.
#
# Usage: scripts/release-check.sh [--subset]
#   --subset   build amd64 only (meshctl for linux, darwin and windows;
#              meshproxy and meshcontroller for linux and darwin): half the
#              targets, every archive format. The full run builds all
#              fourteen targets.
#
# Environment: MESHCTL_TEST_CACHE, else XDG_CACHE_HOME/meshctl-test, else
# ~/.cache/meshctl-test (the same cache as internal/testenv).
set -euo pipefail

GORELEASER_VERSION=v2.12.7 # the last v2 release that builds with Go 1.26

subset=false
for arg in "$@"; do
	case "$arg" in
	--subset) subset=true ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "release-check: unknown argument $arg (use --subset or --help)" >&2
		exit 2
		;;
	esac
done

cd "$(dirname "$0")/.."

fail() {
	echo "release-check: FAIL: $*" >&2
	exit 1
}

step() { echo "release-check: $*" >&2; }

cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

# Install goreleaser into the cache, through a temporary directory so that an
# interrupted install never leaves a half-written binary behind a valid path.
cache=${MESHCTL_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshctl-test}
tooldir=$cache/tools/goreleaser@$GORELEASER_VERSION
goreleaser=$tooldir/goreleaser
if [[ ! -x $goreleaser ]]; then
	step "installing goreleaser $GORELEASER_VERSION into $tooldir (once per machine)"
	mkdir -p "$cache/tools"
	tmp=$(mktemp -d "$cache/tools/.install-XXXXXX")
	cleanup+=("$tmp")
	GOBIN=$tmp nice go install "github.com/goreleaser/goreleaser/v2@$GORELEASER_VERSION"
	mkdir -p "$tooldir"
	mv "$tmp/goreleaser" "$goreleaser"
fi

step "goreleaser check"
"$goreleaser" check --config goreleaser.yaml

config=goreleaser.yaml
if $subset; then
	# The same file with arm64 taken out of the three builds. The count
	# guards against goreleaser.yaml changing under this substitution
	# unnoticed.
	config=$(mktemp --suffix=.yaml)
	cleanup+=("$config")
	[[ $(grep -c '^    goarch: \[amd64, arm64\]$' goreleaser.yaml) == 3 ]] ||
		fail "--subset expects three 'goarch: [amd64, arm64]' lines in goreleaser.yaml"
	sed 's/^    goarch: \[amd64, arm64\]$/    goarch: [amd64]/' goreleaser.yaml >"$config"
fi

# goreleaser reads the remote's URL with its git state, and in a snapshot it
# swallows that failure by dropping the whole state (commit "none"). A clone
# has a remote; a repository without one gets a placeholder through git's
# environment, so the repository's config is left alone.
if [[ -z $(git remote) ]]; then
	export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=remote.origin.url GIT_CONFIG_VALUE_0=https://github.com/meshctl/mesh.git
fi
head=$(git rev-parse HEAD)

step "snapshot release ($([[ $subset == true ]] && echo amd64 subset || echo all targets))"
start=$SECONDS
nice "$goreleaser" release --config "$config" --snapshot --clean \
	--skip=docker,publish,sign --timeout=80m
step "snapshot release took $((SECONDS - start))s"

# --- what came out ---------------------------------------------------------

[[ -f dist/metadata.json ]] || fail "dist/metadata.json is missing"
# metadata.json is one line of JSON written by goreleaser; the version and
# commit are plain strings in it.
version=$(grep -o '"version":"[^"]*"' dist/metadata.json | head -n1 | cut -d'"' -f4)
commit=$(grep -o '"commit":"[^"]*"' dist/metadata.json | head -n1 | cut -d'"' -f4)
[[ -n $version && -n $commit ]] || fail "no version or commit in dist/metadata.json"
[[ $commit == "$head" ]] || fail "goreleaser stamped commit $commit, HEAD is $head (see its git state line above)"
want_version=v$version
step "snapshot version $want_version, commit $commit"

expected_archives=()
arches=(amd64 arm64)
$subset && arches=(amd64)
for arch in "${arches[@]}"; do
	expected_archives+=(
		"meshctl_${version}_linux_${arch}.tar.gz"
		"meshctl_${version}_darwin_${arch}.tar.gz"
		"meshctl_${version}_windows_${arch}.zip"
		"meshproxy_${version}_linux_${arch}.tar.gz"
		"meshproxy_${version}_darwin_${arch}.tar.gz"
		"meshcontroller_${version}_linux_${arch}.tar.gz"
		"meshcontroller_${version}_darwin_${arch}.tar.gz"
	)
done

list_archive() {
	case "$1" in
	*.tar.gz) tar -tzf "$1" ;;
	*.zip) unzip -Z1 "$1" ;;
	esac
}

for a in "${expected_archives[@]}"; do
	[[ -f dist/$a ]] || fail "archive dist/$a is missing"
	contents=$(list_archive "dist/$a") || fail "cannot list dist/$a"
	bin=${a%%_*}
	[[ $a == *windows* ]] && bin=$bin.exe
	grep -qx "$bin" <<<"$contents" || fail "dist/$a does not contain $bin"
	if [[ $bin == meshctl* ]]; then
		for c in meshctl.bash meshctl.zsh meshctl.fish meshctl.ps1; do
			grep -qx "completions/$c" <<<"$contents" || fail "dist/$a does not contain completions/$c"
		done
	fi
done
step "${#expected_archives[@]} archives present, meshctl archives carry the completions"

# The completions are what the hooks generated, not empty files.
for c in bash zsh fish ps1; do
	grep -q meshctl "completions/meshctl.$c" || fail "completions/meshctl.$c does not mention meshctl"
done

[[ -f dist/checksums.txt ]] || fail "dist/checksums.txt is missing"
for a in "${expected_archives[@]}"; do
	grep -q " $a\$" dist/checksums.txt || fail "dist/checksums.txt has no line for $a"
done
(cd dist && sha256sum --quiet -c checksums.txt) || fail "dist/checksums.txt does not match the archives"
step "checksums match"

# The stamped version, from the binaries the archives were made from.
check_version() { # name, json output of its version command
	local flat
	flat=$(tr -d ' \n\t' <<<"$2")
	grep -qF "\"version\":\"$want_version\"" <<<"$flat" ||
		fail "$1 reports $(grep -o '"version":"[^"]*"' <<<"$flat" | head -n1), want \"version\":\"$want_version\""
	grep -qF "\"commit\":\"$commit\"" <<<"$flat" ||
		fail "$1 reports $(grep -o '"commit":"[^"]*"' <<<"$flat" | head -n1), want \"commit\":\"$commit\""
}

find_binary() { # build id
	local found
	found=$(find dist -path "dist/$1_linux_amd64*/$1" -type f | head -n1)
	[[ -n $found ]] || fail "no linux/amd64 $1 under dist/"
	echo "$found"
}

if [[ $(uname -s)/$(uname -m) == Linux/x86_64 ]]; then
	meshctl=$(find_binary meshctl)
	meshproxy=$(find_binary meshproxy)
	meshcontroller=$(find_binary meshcontroller)
	check_version meshctl "$("$meshctl" version --client -o json)"
	check_version meshproxy "$("$meshproxy" version -o json)"
	check_version meshcontroller "$("$meshcontroller" version -o json)"
	step "meshctl, meshproxy and meshcontroller report $want_version ($commit)"
else
	step "not on linux/amd64: skipping the run of the built binaries"
fi

step "ok"
