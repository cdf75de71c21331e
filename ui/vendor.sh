#!/usr/bin/env bash
# ui/vendor.sh — rebuild runner/server/ui/static/vendor/ from package-lock.json.
#
# The web UI is plain ES modules with no build step; the few libraries it uses are copied
# here from the npm packages pinned (with their integrity hashes) in package-lock.json,
# with their licenses, and committed: `pip install .` then gives the whole UI with no
# Node.js and no network. Run this (needs node/npm and the npm registry) after changing
# package.json, then commit the result; SHA256SUMS lets a test check the copies.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/../runner/server/ui/static/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp "$here/package.json" "$here/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
nm="$tmp/node_modules"

rm -rf "$out"
mkdir -p "$out"
# Source maps are not shipped: drop the comment that would make dev tools ask for them.
strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1" > "$2"; }
strip_map "$nm/@dagrejs/dagre/dist/dagre.esm.js" "$out/dagre.esm.js"
cp "$nm/@dagrejs/dagre/LICENSE" "$out/dagre.LICENSE.txt"
cp "$nm/@dagrejs/dagre/dist/dagre.esm.js.LEGAL.txt" "$out/dagre.esm.js.LEGAL.txt"
cp "$nm/@dagrejs/graphlib/LICENSE" "$out/graphlib.LICENSE.txt"   # bundled in dagre.esm.js
strip_map "$nm/@highlightjs/cdn-assets/es/core.min.js" "$out/highlight.core.min.js"
strip_map "$nm/@highlightjs/cdn-assets/es/languages/yaml.min.js" "$out/highlight.yaml.min.js"
cp "$nm/@highlightjs/cdn-assets/LICENSE" "$out/highlight.js.LICENSE.txt"
# The API's interactive page (/docs) is Swagger UI: served from here too, not from a CDN.
strip_map "$nm/swagger-ui-dist/swagger-ui-bundle.js" "$out/swagger-ui-bundle.js"
strip_map "$nm/swagger-ui-dist/swagger-ui.css" "$out/swagger-ui.css"
cp "$nm/swagger-ui-dist/LICENSE" "$out/swagger-ui.LICENSE.txt"
node -e '
  const lock = require(process.argv[1]);
  const pkgs = lock.packages;
  for (const name of ["@dagrejs/dagre", "@dagrejs/graphlib", "@highlightjs/cdn-assets", "swagger-ui-dist"]) {
    const p = pkgs["node_modules/" + name];
    console.log(`${name} ${p.version} ${p.license} ${p.integrity}`);
  }' "$tmp/package-lock.json" > "$out/VERSIONS.txt"
(cd "$out" && sha256sum -- *.js *.css *.txt > SHA256SUMS)
echo "vendored into $out:"
cat "$out/VERSIONS.txt"
