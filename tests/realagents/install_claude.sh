#!/bin/sh
# Install the real Claude Code binary, pinned, from npm.
#
#   tests/realagents/install_claude.sh [PREFIX]     (PREFIX defaults to <repo>/.agents)
#
# Idempotent: does nothing when the pinned version is already there. The last line printed is
# the path of the `claude` executable.
set -eu

VERSION="0.3.336"   # ships Claude Code 2.1.336
PACKAGE="@anthropic-ai/claude-agent-sdk-linux-x64"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PREFIX="${1:-${PREFIX:-$repo/.agents}}"
pkgdir="$PREFIX/node_modules/$PACKAGE"
bin="$pkgdir/claude"

installed_version() {
    [ -f "$pkgdir/package.json" ] || return 0
    sed -n 's/.*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$pkgdir/package.json"
}

if [ "$(installed_version)" = "$VERSION" ] && [ -x "$bin" ]; then
    echo "install_claude: $PACKAGE@$VERSION already in $PREFIX" >&2
else
    if ! command -v npm >/dev/null 2>&1; then
        echo "install_claude: npm not found on PATH; install node and npm first" >&2
        exit 1
    fi
    mkdir -p "$PREFIX"
    echo "install_claude: npm install --prefix $PREFIX $PACKAGE@$VERSION" >&2
    if ! npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact "$PACKAGE@$VERSION" >&2; then
        echo "install_claude: npm install of $PACKAGE@$VERSION failed (is the npm registry reachable?)" >&2
        exit 1
    fi
    if [ ! -x "$bin" ]; then
        echo "install_claude: $bin is missing or not executable after npm install" >&2
        exit 1
    fi
fi
echo "$bin"
