#!/usr/bin/env bash
# Build the Lambda artifacts into .aws-sam/build with `sam build`, without Docker.
#
# The SAM CLI lives in its own venv (.venv-sam, Python 3.12), created on first use. sam's
# python3.12 builder runs the `python3.12` it finds on PATH, so that interpreter's bin dir goes
# first on PATH. Extra arguments are passed to `sam build` (e.g. --cached is already the
# samconfig.toml default; --no-cached forces a full rebuild). Safe to run again.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-sam"
sam_cli_spec="${SAM_CLI_SPEC:-aws-sam-cli}"

find_python312() {
    local candidate
    if command -v pyenv >/dev/null 2>&1; then
        candidate="$(ls -d "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1 || true)"
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    fi
    if command -v python3.12 >/dev/null 2>&1; then
        # Resolves a pyenv/asdf shim to the real interpreter, whose bin dir is what PATH needs.
        python3.12 -c 'import sys; print(sys.executable)'
        return 0
    fi
    return 1
}

if ! python312="$(find_python312)"; then
    echo "sam-build: no Python 3.12 found (looked in \$(pyenv root)/versions/3.12*/bin and for python3.12 on PATH)." >&2
    echo "sam-build: the Lambda runtime is python3.12 and sam's builder needs that interpreter: install it, e.g. 'pyenv install 3.12'." >&2
    exit 1
fi

# A venv left by an interpreter that is gone, or by another version, is rebuilt rather than trusted.
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
    echo "sam-build: creating $venv with $python312"
    rm -rf "$venv"
    "$python312" -m venv "$venv"
fi
if ! [[ -x "$venv/bin/sam" ]]; then
    echo "sam-build: installing $sam_cli_spec into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$sam_cli_spec"
fi

python312_bin="$(dirname "$python312")"
export PATH="$python312_bin:$PATH"
export SAM_CLI_TELEMETRY=0

cd "$repo_root"
echo "sam-build: $("$venv/bin/sam" --version), builder python $(python3.12 -c 'import sys; print(sys.version.split()[0])')"
exec "$venv/bin/sam" build "$@"
