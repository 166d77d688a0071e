#!/bin/sh
# Install the pinned Codex CLI from npm into $PREFIX (default: <repo>/.agents); idempotent.
# The platform binary is published as a version-tagged variant of @openai/codex
# (0.171.0-linux-x64): its package holds vendor/<target>/bin/codex, a static musl build.
# The last line printed is the binary's path.
set -eu

CODEX_VERSION="0.171.0"
PLATFORM="linux-x64"
TARGET="x86_64-unknown-linux-musl"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PREFIX=${PREFIX:-"$repo/.agents"}
bin="$PREFIX/node_modules/@openai/codex/vendor/$TARGET/bin/codex"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "codex-cli $CODEX_VERSION"; then
    echo "$bin"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install_codex.sh: npm is not installed (need Node.js + npm to fetch @openai/codex)" >&2
    exit 1
fi

mkdir -p "$PREFIX"
spec="@openai/codex@$CODEX_VERSION-$PLATFORM"
if ! npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error "$spec" >&2; then
    echo "install_codex.sh: 'npm install $spec' failed (registry unreachable? version gone?)" >&2
    exit 1
fi
if ! [ -x "$bin" ]; then
    echo "install_codex.sh: $spec installed but $bin is missing (package layout changed?)" >&2
    exit 1
fi
version=$("$bin" --version)
if [ "$version" != "codex-cli $CODEX_VERSION" ]; then
    echo "install_codex.sh: $bin reports '$version', expected 'codex-cli $CODEX_VERSION'" >&2
    exit 1
fi
echo "$bin"
