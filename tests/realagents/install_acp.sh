#!/bin/sh
# Install three real ACP agents, pinned, from npm, into $PREFIX (default: <repo>/.agents/acp).
#
#   tests/realagents/install_acp.sh [PREFIX]
#
# - @zed-industries/claude-agent-acp: Zed's ACP adapter for Claude Code (a node program; it runs
#   the Claude Code of its own dependency @anthropic-ai/claude-agent-sdk, cli.js, with node).
# - @zed-industries/codex-acp: Zed's ACP adapter for Codex (a Rust binary with Codex built in,
#   from the platform package @zed-industries/codex-acp-linux-x64).
# - opencode, which speaks ACP itself (`opencode acp`): the platform package opencode-linux-x64
#   of opencode-ai, a single binary (installed directly: opencode-ai would fetch every variant
#   its optional dependencies allow).
# A prefix of their own, so that npm's pruning of the shared .agents/ tree cannot remove the
# other agents. Idempotent. The last three lines printed are the three executables.
set -eu

CLAUDE_ACP_VERSION="0.23.1"
CODEX_ACP_VERSION="0.16.0"
OPENCODE_VERSION="1.18.33"
PLATFORM="linux-x64"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PREFIX="${1:-${PREFIX:-$repo/.agents/acp}}"
claude_pkg="$PREFIX/node_modules/@zed-industries/claude-agent-acp"
claude_bin="$claude_pkg/dist/index.js"
codex_pkg="$PREFIX/node_modules/@zed-industries/codex-acp-$PLATFORM"
codex_bin="$codex_pkg/bin/codex-acp"
opencode_pkg="$PREFIX/node_modules/opencode-$PLATFORM"
opencode_bin="$opencode_pkg/bin/opencode"

version_of() {
    [ -f "$1/package.json" ] || return 0
    sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$1/package.json" | head -n 1
}

if [ "$(version_of "$claude_pkg")" = "$CLAUDE_ACP_VERSION" ] && [ -f "$claude_bin" ] \
    && [ "$(version_of "$codex_pkg")" = "$CODEX_ACP_VERSION" ] && [ -x "$codex_bin" ] \
    && [ "$(version_of "$opencode_pkg")" = "$OPENCODE_VERSION" ] && [ -x "$opencode_bin" ]; then
    echo "install_acp: claude-agent-acp@$CLAUDE_ACP_VERSION, codex-acp@$CODEX_ACP_VERSION," \
        "opencode@$OPENCODE_VERSION already in $PREFIX" >&2
else
    for tool in npm node; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "install_acp: $tool not found on PATH; install node and npm first" >&2
            exit 1
        fi
    done
    mkdir -p "$PREFIX"
    specs="@zed-industries/claude-agent-acp@$CLAUDE_ACP_VERSION @zed-industries/codex-acp@$CODEX_ACP_VERSION"
    specs="$specs opencode-$PLATFORM@$OPENCODE_VERSION"
    echo "install_acp: npm install --prefix $PREFIX $specs" >&2
    # shellcheck disable=SC2086 # three specs, split on purpose
    if ! npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact --loglevel=error $specs >&2; then
        echo "install_acp: npm install of $specs failed (is the npm registry reachable?)" >&2
        exit 1
    fi
    if [ ! -f "$claude_bin" ] || [ ! -x "$codex_bin" ] || [ ! -x "$opencode_bin" ]; then
        echo "install_acp: $claude_bin, $codex_bin or $opencode_bin is missing after npm install" \
            "(layout changed?)" >&2
        exit 1
    fi
fi
echo "$claude_bin"
echo "$codex_bin"
echo "$opencode_bin"
