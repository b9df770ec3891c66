#!/bin/sh
# Install a release of `rollback`: download its archive, check the archive's
# SHA-256, put the binary in a folder.
#
#   sh install.sh --version 0.1.0                 from the project's releases, for this machine
#   sh install.sh --archive FILE|DIR|URL          a release archive at hand (air-gapped machines, tests);
#                                                 DIR holds rollback-VERSION-TARGET.tar.gz and its .sha256
#   options:  --to DIR        where the binary goes [default: $HOME/.local/bin]
#             --target T      the target triple [default: this machine's]
#             --sha256 HEX    the expected checksum, instead of the published .sha256 file
#             --releases URL  where release archives are: URL/vVERSION/rollback-VERSION-TARGET.tar.gz
#
# Each option can come from the environment instead: ROLLBACK_VERSION,
# ROLLBACK_ARCHIVE, ROLLBACK_INSTALL_DIR, ROLLBACK_TARGET, ROLLBACK_SHA256,
# ROLLBACK_RELEASES. Exit codes: 0 installed, 1 failed (a wrong checksum
# installs nothing), 2 usage, 3 no release archive for this version and
# target (the GitHub Action then builds with cargo install).
set -eu

version=${ROLLBACK_VERSION:-}
archive=${ROLLBACK_ARCHIVE:-}
to=${ROLLBACK_INSTALL_DIR:-${HOME:-}/.local/bin}
target=${ROLLBACK_TARGET:-}
sha256=${ROLLBACK_SHA256:-}
releases=${ROLLBACK_RELEASES:-https://example.invalid/rollback/releases/download}

say() { printf 'install: %s\n' "$*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || die "$1 needs a value" 2
	case $1 in
	--version) version=$2 ;;
	--archive) archive=$2 ;;
	--to) to=$2 ;;
	--target) target=$2 ;;
	--sha256) sha256=$2 ;;
	--releases) releases=$2 ;;
	*) die "unknown option $1 (see the top of this script)" 2 ;;
	esac
	shift 2
done
version=${version#v}

# The targets that run here, best first. The project's Linux archives are
# static musl builds (one binary for every distribution); a local folder may
# hold a glibc build too (scripts/package on this machine).
targets=$target
if [ -z "$targets" ]; then
	case "$(uname -s)-$(uname -m)" in
	Linux-x86_64 | Linux-amd64) targets="x86_64-unknown-linux-musl x86_64-unknown-linux-gnu" ;;
	Linux-aarch64 | Linux-arm64) targets="aarch64-unknown-linux-musl aarch64-unknown-linux-gnu" ;;
	Darwin-x86_64) targets=x86_64-apple-darwin ;;
	Darwin-arm64) targets=aarch64-apple-darwin ;;
	*) die "no release archive for $(uname -s) $(uname -m); build with: cargo install --locked rollback-cli" 3 ;;
	esac
	target=${targets%% *}
fi

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d' ' -f1
	else
		openssl dgst -sha256 -r "$1" | cut -d' ' -f1
	fi
}

# fetch URL FILE: 0 fetched, 3 not there (404), 1 any other failure.
fetch() {
	if command -v curl >/dev/null 2>&1; then
		# curl exit 37: a file:// URL naming no file, the 404 of a local mirror.
		code=$(curl -sSL --proto '=https,http,file' --retry 3 -o "$2" -w '%{http_code}' "$1") || {
			[ $? -eq 37 ] && return 3
			return 1
		}
		case $code in
		2?? | 000) return 0 ;; # 000: file:// URLs
		404) return 3 ;;
		*) say "$1: HTTP $code"; return 1 ;;
		esac
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O "$2" "$1" || return 3
	else
		die "neither curl nor wget is installed"
	fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# Find the archive and its checksum file.
case $archive in
"")
	[ -n "$version" ] || die "which version? --version X.Y.Z (or ROLLBACK_VERSION), or --archive" 2
	name="rollback-$version-$target.tar.gz"
	url="$releases/v$version/$name"
	say "downloading $url"
	status=0
	fetch "$url" "$work/$name" || status=$?
	[ $status -eq 0 ] || {
		[ $status -eq 3 ] && die "no release archive $name at $releases/v$version" 3
		die "cannot download $url"
	}
	file="$work/$name"
	if [ -z "$sha256" ]; then
		fetch "$url.sha256" "$work/$name.sha256" || die "cannot download $url.sha256"
		sumfile="$work/$name.sha256"
	fi
	;;
http://* | https://* | file://*)
	name=$(basename "$archive")
	say "downloading $archive"
	status=0
	fetch "$archive" "$work/$name" || status=$?
	[ $status -eq 0 ] || die "cannot download $archive" "$status"
	file="$work/$name"
	if [ -z "$sha256" ]; then
		fetch "$archive.sha256" "$work/$name.sha256" || die "cannot download $archive.sha256"
		sumfile="$work/$name.sha256"
	fi
	;;
*)
	if [ -d "$archive" ]; then
		file=""
		for t in $targets; do
			# The version asked for, or the only archive of this target in the folder.
			v=${version:-*}
			# shellcheck disable=SC2086 # $v globs when no version was given
			set -- "$archive"/rollback-$v-"$t".tar.gz
			[ -f "$1" ] || continue
			[ $# -eq 1 ] || die "$archive: more than one archive for $t ($*): give --version" 2
			file=$1
			break
		done
		[ -n "$file" ] || die "$archive: no rollback-${version:-VERSION}-TARGET.tar.gz for $targets" 3
	else
		[ -f "$archive" ] || die "$archive: no such file"
		file=$archive
	fi
	name=$(basename "$file")
	if [ -z "$sha256" ]; then
		[ -f "$file.sha256" ] || die "$file.sha256: no such file; give the checksum with --sha256"
		sumfile="$file.sha256"
	fi
	;;
esac

if [ -z "$sha256" ]; then
	sha256=$(cut -d' ' -f1 <"$sumfile")
fi
actual=$(sha256_of "$file")
expected=$(printf '%s' "$sha256" | tr 'A-F' 'a-f')
[ "$actual" = "$expected" ] || die "$name: SHA-256 is $actual, expected $expected; nothing installed"
say "$name: SHA-256 $actual, as expected"

tar -xzf "$file" -C "$work"
bin=$(find "$work" -type f -name rollback -perm -u+x | head -n 1)
[ -n "$bin" ] || die "$name holds no rollback binary"
mkdir -p "$to"
# Through a temporary name, so a running `rollback` is never half written.
cp "$bin" "$to/.rollback.new"
chmod 755 "$to/.rollback.new"
mv -f "$to/.rollback.new" "$to/rollback"
say "installed $to/rollback ($("$to/rollback" --version 2>/dev/null || echo "cannot run here"))"
case ":${PATH:-}:" in
*":$to:"*) ;;
*) say "$to is not in PATH" ;;
esac
