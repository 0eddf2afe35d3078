#!/usr/bin/env bats
# The documentation under docs/ says what the code does (issue 8 item 4):
#
#   - every plugstack key of src/core/config.rs has a row in docs/admin-guide.md's key
#     table, and every row names a key the parser accepts;
#   - every `pyxis: ...` message quoted in docs/ exists in src/ (the literal parts between
#     <placeholders> and "..."), so a reworded error makes this fail;
#   - README links every guide, and each guide exists.
#
# Needs only the repository (no cluster); run-all runs it as root with PXT_REPO set,
# from the repository it is found next to the suite.

REPO="${PXT_REPO:-$BATS_TEST_DIRNAME/../..}"

setup() {
    [ -f "$REPO/src/core/config.rs" ] || { echo "no repository at $REPO (set PXT_REPO)" >&2; return 1; }
}

# parser_keys: the keys parse_config matches (its match arms, not container_scope's values)
parser_keys() {
    sed -n '/^pub fn parse_config/,/^}/p' "$REPO/src/core/config.rs" \
        | grep -E '^ *"[a-z_]+" =>' | grep -v 'Scope::' | sed -E 's/^ *"([a-z_]+)".*/\1/' | sort -u
}

# documented_keys: the first column of the admin guide's key table
documented_keys() {
    grep -E '^\| `[a-z_]+=' "$REPO/docs/admin-guide.md" | sed -E 's/^\| `([a-z_]+)=.*/\1/' | sort -u
}

@test "every plugstack key is documented in the admin guide, and only those" {
    parser=$(parser_keys)
    documented=$(documented_keys)
    [ "$(wc -l <<< "$parser")" -ge 11 ] || { echo "found only: $parser" >&2; return 1; }
    diff <(printf '%s\n' "$parser") <(printf '%s\n' "$documented")
}

@test "every pyxis: message quoted in docs/ exists in the source" {
    python3 - "$REPO" <<'PY'
import pathlib, re, subprocess, sys
repo = pathlib.Path(sys.argv[1])
src = "\n".join(p.read_text(errors="replace") for p in (repo / "src").rglob("*.rs"))
missing, checked = [], 0
for doc in sorted((repo / "docs").glob("*.md")):
    text = doc.read_text()
    for quote in re.findall(r"`(pyxis: [^`]+)`", re.sub(r"\s*\n\s*", " ", text)):
        body = quote[len("pyxis: "):]
        for frag in re.split(r"<[^>]*>|\.\.\.", body):
            if len(frag.strip()) < 4:
                continue
            checked += 1
            if frag not in src and frag.replace('"', '\\"') not in src:
                missing.append(f"{doc.name}: `{quote}`: {frag!r}")
if checked < 20:
    missing.append(f"only {checked} fragments checked: the quotes were not found")
print("\n".join(missing))
sys.exit(1 if missing else 0)
PY
}

@test "README links every guide" {
    for g in user-guide admin-guide migration troubleshooting architecture; do
        [ -s "$REPO/docs/$g.md" ] || { echo "no docs/$g.md" >&2; return 1; }
        grep -q "(docs/$g.md)" "$REPO/README.md" || { echo "README does not link docs/$g.md" >&2; return 1; }
    done
}
