# Sourced by demo.sh and test.sh: make sure .venv exists and holds this project.
# Creates .venv with python3 -m venv when missing, and (re)installs the project with its dev
# extras when the venv is new or pyproject.toml changed since the last install.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.interp-installed"
want=$(cd "$root" && sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing interp and its dependencies into $venv (first run takes a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[dev]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
